#!/usr/bin/env bash
# Second half of `npm run build` (after tsc): compiles the `virtmem` front (src/cli/warm-client.c)
# and gives the build a new id, so a warm CLI process of an older build is never talked to.
# Without a C compiler the front is left out and bin/virtmem runs the CLI on Node directly.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
rm -f dist/virtmem-client
od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > dist/warm-id
if command -v cc >/dev/null 2>&1; then
  cc -O2 -Wall -Wextra -Werror -o dist/virtmem-client.tmp src/cli/warm-client.c
  mv dist/virtmem-client.tmp dist/virtmem-client
else
  echo "build: no C compiler (cc): bin/virtmem will run every command on Node (slower start-up)" >&2
fi
