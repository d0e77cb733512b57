#!/bin/sh
# Install the project's dependencies (not the project itself) into the active virtual
# environment, for one torch flavour. Run by the Dockerfile's dependency stages from a folder
# holding pyproject.toml, constraints.txt and project_requirements.py.
#
#   install_dependencies.sh FLAVOUR [EXTRA ...]     FLAVOUR: cpu | cuda
#
# Why two flavours need two routes:
#   constraints.txt pins torch (and torchvision) to the builds on PyPI, which for Linux are the
#   CUDA builds: they pull in ~3 GB of nvidia-* / cuda-* / triton wheels.
#   - cuda: install everything from PyPI under constraints.txt, exactly as a developer does.
#   - cpu:  install torch (and torchvision, when an extra asks for it) FIRST, from the PyTorch
#           CPU index, at the versions constraints.txt pins (the CPU index calls them e.g.
#           2.14.1+cpu, which satisfies "==2.14.1"). Then install the rest from PyPI with
#           constraints.txt minus those pins. Dropping them matters: it keeps pip from ever
#           treating PyPI's CUDA build as the one to install; the requirement itself
#           (torch>=...) is already met by the CPU build, so pip keeps it and only adds torch's
#           own dependencies (filelock, sympy, ...), under the remaining pins.
#   Either way the versions of everything come from constraints.txt: nothing is pinned twice.
set -eu

flavour="${1:?usage: install_dependencies.sh cpu|cuda [EXTRA ...]}"
shift
cpu_index="${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

extra_args=""
for extra in "$@"; do
    extra_args="$extra_args --extra $extra"
done
# shellcheck disable=SC2086  # word splitting of extra_args is intended
python project_requirements.py pyproject.toml $extra_args >"$work/requirements.txt"

case "$flavour" in
cpu)
    # The torch-family packages this install needs, pinned as constraints.txt pins them.
    : >"$work/torch-cpu.txt"
    for package in torch torchvision; do
        if grep -Eiq "^${package}([^a-z0-9_.-]|\$)" "$work/requirements.txt"; then
            pin="$(grep -Ei "^${package}==" constraints.txt)" || {
                echo "constraints.txt does not pin ${package}" >&2
                exit 1
            }
            echo "$pin" >>"$work/torch-cpu.txt"
        fi
    done
    # --no-deps: the CPU index is only trusted for the torch wheels themselves; their
    # dependencies come from PyPI below, under constraints.txt.
    pip install --no-deps --index-url "$cpu_index" -r "$work/torch-cpu.txt"
    grep -Eiv '^(torch|torchvision)==' constraints.txt >"$work/constraints.txt"
    pip install -c "$work/constraints.txt" -r "$work/requirements.txt"
    # Fail the build, not the first request, if a CUDA build slipped in after all.
    python -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None else "torch is a CUDA build")'
    ;;
cuda)
    pip install -c constraints.txt -r "$work/requirements.txt"
    python -c 'import sys, torch; sys.exit(0 if torch.version.cuda else "torch is not a CUDA build")'
    ;;
*)
    echo "TORCH_FLAVOUR must be cpu or cuda, not '$flavour'" >&2
    exit 1
    ;;
esac

pip check
