#!/usr/bin/env bash
# Remove a (lost) node from the cluster; run on a remaining member.
# Usage: db-remove-instance.sh NODE_HOST     Exit: 0 removed or not a member.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly node="${1:?usage: db-remove-instance.sh NODE_HOST}"

members="$(group_members)"
if ! grep -qx "$node" <<<"$members"; then
  echo "$node is not a member; nothing to do"
  exit 0
fi
# force: the node is usually gone, so it cannot confirm its own removal.
shell_api "127.0.0.1:3306" cluster remove-instance "$node:3306" --force=true
echo "$node removed"
