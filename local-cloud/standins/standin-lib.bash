#!/usr/bin/env bash
# Shared by the stand-ins of a local-cloud host (local-cloud/hosts/ha-host binds this folder
# at /opt/ha-standins/bin inside every host). A stand-in is a contract of the real tool: it
# rejects what the real tool rejects, and where a behaviour is an assumption the comment says
# so. Per-host state lives under /var/lib/ha-standin (in the host's own overlay):
#   rpmdb            installed packages, one name a line (dnf installs, rpm -q answers)
#   imds/NAME        instance metadata answers (local-ipv4, local-hostname, instance-id)
#   secrets/ID       secret values the instance role may read
#   units/UNIT.*     systemd unit state (enabled, supervisor pid, stop request)
set -euo pipefail

readonly STANDIN_STATE=/var/lib/ha-standin

installed() {
  grep -qx "$1" "$STANDIN_STATE/rpmdb" 2>/dev/null
}

# Is WORD one of the space-separated LIST?
listed() {
  [[ " $1 " == *" $2 "* ]]
}
