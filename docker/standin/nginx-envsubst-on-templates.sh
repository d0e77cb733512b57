#!/bin/sh
# /docker-entrypoint.d/20-envsubst-on-templates.sh of the stand-in nginx image: what the official
# image's script of that name does, with the same variables.
#   NGINX_ENVSUBST_TEMPLATE_DIR     templates (default /etc/nginx/templates): each X.template
#   NGINX_ENVSUBST_OUTPUT_DIR       is written to this folder as X (default /etc/nginx/conf.d)
#   NGINX_ENVSUBST_TEMPLATE_SUFFIX  (default .template) with only the environment variables
#   NGINX_ENVSUBST_FILTER           whose names match this pattern (default: all) put in.
set -eu

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
filter="${NGINX_ENVSUBST_FILTER:-}"
[ -d "$template_dir" ] || exit 0
# "${NAME} ${NAME} ...": only these are replaced, so nginx's own $variables stay.
defined="$(env | awk -F= -v filter="$filter" '$1 ~ filter { printf "${%s} ", $1 }')"
for template in "$template_dir"/*"$suffix"; do
    [ -f "$template" ] || continue
    name="$(basename "$template" "$suffix")"
    envsubst "$defined" <"$template" >"$output_dir/$name"
    echo "$0: rendered $template to $output_dir/$name" >&2
done
