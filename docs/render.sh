#!/usr/bin/env bash
# Renders the diagrams in docs/ from their Graphviz sources (Debian: apt-get install graphviz).
# Run from anywhere after editing a .dot file; the PNGs are committed beside their sources.
set -euo pipefail
cd "$(dirname "$0")"
command -v dot >/dev/null || { echo "dot not found: apt-get install graphviz" >&2; exit 2; }
for source in *.dot; do
    dot -Tpng -Gdpi=96 "$source" -o "${source%.dot}.png"
    echo "wrote docs/${source%.dot}.png"
done
