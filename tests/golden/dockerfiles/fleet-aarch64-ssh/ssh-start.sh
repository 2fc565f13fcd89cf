#!/bin/sh
# Rendered by torchship: key-only sshd as the non-root user. Mount your public key at
# ~/.ssh/authorized_keys (read-only); the host key is generated per container, never baked in.
set -eu
mkdir -p /tmp/torchship-ssh && chmod 700 /tmp/torchship-ssh
[ -f /tmp/torchship-ssh/ssh_host_ed25519_key ] || \
  ssh-keygen -q -t ed25519 -N '' -f /tmp/torchship-ssh/ssh_host_ed25519_key
exec /usr/sbin/sshd -D -e -f /etc/ssh/torchship_sshd_config
