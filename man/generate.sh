#!/usr/bin/env bash
# Writes the manual pages and shell completions of chatd, chat and chatctl
# into OUTDIR, from the built binaries in BINDIR and config/chatd.toml:
#
#   man/generate.sh BINDIR OUTDIR [DATE [DOCDIR]]
#
#   OUTDIR/man1/chat.1  OUTDIR/man5/chatd.toml.5
#   OUTDIR/man8/chatd.8 OUTDIR/man8/chatctl.8
#   OUTDIR/completions/{bash/CMD, zsh/_CMD, fish/CMD.fish} for each command
#
# `make man` runs it on the release binaries (into .build/man, which `make
# install` installs), and IntegrationTests' ManualTests on the debug ones.
# DATE (YYYY-MM-DD) goes into the pages; DOCDIR is named in their SEE ALSO.
set -euo pipefail

bindir=$1
outdir=$2
date=${3:-1970-01-01}
docdir=${4:-/usr/share/doc/chatd}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pages=(python3 "$here/manpages.py" --date "$date" --docdir "$docdir")

mkdir -p "$outdir"/man1 "$outdir"/man5 "$outdir"/man8 \
    "$outdir"/completions/bash "$outdir"/completions/zsh "$outdir"/completions/fish
"${pages[@]}" command "$bindir/chatd" 8 > "$outdir/man8/chatd.8"
"${pages[@]}" command "$bindir/chat" 1 > "$outdir/man1/chat.1"
"${pages[@]}" command "$bindir/chatctl" 8 > "$outdir/man8/chatctl.8"
"${pages[@]}" config "$here/../config/chatd.toml" > "$outdir/man5/chatd.toml.5"

for command in chatd chat chatctl; do
    # bash-completion sources these files: a #! line means nothing there
    # (and lintian warns of it), so it is left out.
    "$bindir/$command" --generate-completion-script bash | sed '1{/^#!/d}' > "$outdir/completions/bash/$command"
    "$bindir/$command" --generate-completion-script zsh > "$outdir/completions/zsh/_$command"
    "$bindir/$command" --generate-completion-script fish > "$outdir/completions/fish/$command.fish"
done
