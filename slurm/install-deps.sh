#!/usr/bin/env bash
# Debian's Slurm, munge and MariaDB for the local 2-node cluster (slurm/cluster.sh), which the
# Slurm tests start. Run as root; CI calls it before `make test`. About 30 s on a cold cache.
set -euo pipefail
if [[ $(id -u) != 0 ]]; then
  echo "slurm/install-deps.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
  slurmctld slurmd slurm-client munge slurmdbd mariadb-server
