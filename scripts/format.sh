#!/usr/bin/env bash
# Formats sluice's C++ sources with clang-format (.clang-format at the top).
#   scripts/format.sh          rewrite files in place
#   scripts/format.sh --check  change nothing; list unformatted files and exit 1 if any
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-fix}
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.hpp' '*.cpp' '*.h' | grep -v '^build/' || true)
[ "${#files[@]}" -gt 0 ] || exit 0
if [ "$mode" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ "${#bad[@]}" -gt 0 ]; then
    echo "format: these files are not clang-formatted (run scripts/format.sh):"
    printf '  %s\n' "${bad[@]}"
    exit 1
  fi
  echo "format: ${#files[@]} files clean"
else
  clang-format -i "${files[@]}"
fi
