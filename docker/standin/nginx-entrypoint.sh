#!/bin/sh
# The stand-in nginx image's entrypoint, as the official nginx image's works: when the command
# is nginx, each file in /docker-entrypoint.d/ (NGINX_ENTRYPOINT_DIR), in name order, is sourced
# if it is an executable *.envsh (so what it exports reaches the next ones) or run if it is an
# executable *.sh; then the command is exec'd. The image ships one such file,
# 20-envsubst-on-templates.sh (docker/standin/nginx-envsubst-on-templates.sh).
set -eu

# In a subshell, as the official one runs them: what an *.envsh exports reaches the scripts
# after it, not nginx.
if [ "${1:-}" = nginx ]; then (
    entrypoint_dir="${NGINX_ENTRYPOINT_DIR:-/docker-entrypoint.d}"
    for file in $(find "$entrypoint_dir" -follow -type f 2>/dev/null | sort -V); do
        [ -x "$file" ] || { echo "$0: ignoring $file, not executable" >&2; continue; }
        case "$file" in
        *.envsh)
            # shellcheck disable=SC1090  # the files are the image's and the deployment's
            . "$file"
            ;;
        *.sh)
            "$file"
            ;;
        esac
    done
) fi
exec "$@"
