#!/usr/bin/env bash
# Time `make demo` and `make test` from a fresh clone (installs included), as a newcomer would run them.
#   benchmarks/fresh_clone_demo.sh [demo|test|both]
set -euo pipefail
what=${1:-both}
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
git clone -q "$src" "$dir/argen"
cd "$dir/argen"
if [ "$what" = demo ] || [ "$what" = both ]; then
  start=$(date +%s); make demo; echo "make demo: $(( $(date +%s) - start )) s (fresh clone in $dir/argen)"
  ls -la argen-demo/samples.png argen-demo/samples.npz argen-demo/metrics.json
fi
if [ "$what" = test ] || [ "$what" = both ]; then
  start=$(date +%s); make test; echo "make test: $(( $(date +%s) - start )) s"
fi
