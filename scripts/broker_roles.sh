#!/usr/bin/env bash
# RabbitMQ users per role for AGATA, instead of guest (agata up does this itself): a user for
# the cloud's services on the virtual host "agata" and one for a device's services on a virtual
# host of its own ("agata.device": a user that may publish on a virtual host's default exchange
# reaches every queue there, so sides never share one). Task code gets no broker credential, and
# guest has no permission on either, so a task process (or anything else on the machine) that
# logs in as guest cannot reach a service queue.
#
#   scripts/broker_roles.sh [--vhost NAME] [--device-vhost NAME] [--env-file PATH] [--remove-guest]
#
# Writes the services' settings (AGATA_SERVER_BROKER_* for the cloud, AGATA_CLIENT_BROKER_* for
# a device) to the env file (default <data_dir>/secrets/broker.env, mode 0600); source it
# before starting the services. Safe to run again: existing users keep their passwords.
# RABBITMQCTL overrides the command (e.g. to address another node: "rabbitmqctl -n NODE").
set -euo pipefail

vhost=agata
device_vhost=
env_file=${XDG_DATA_HOME:-$HOME/.local/share}/agata/secrets/broker.env
remove_guest=false
while [ $# -gt 0 ]; do
  case "$1" in
    --vhost) vhost=$2; shift 2 ;;
    --device-vhost) device_vhost=$2; shift 2 ;;
    --env-file) env_file=$2; shift 2 ;;
    --remove-guest) remove_guest=true; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "[broker] unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
device_vhost=${device_vhost:-$vhost.device}
for name in "$vhost" "$device_vhost"; do
  case "$name" in
    *[!A-Za-z0-9._-]*|'') echo "[broker] bad virtual host name: $name" >&2; exit 2 ;;
  esac
done

read -r -a ctl <<<"${RABBITMQCTL:-rabbitmqctl}"
log() { printf '[broker] %s\n' "$*" >&2; }
rmq() { "${ctl[@]}" --quiet "$@"; }

umask 077
[ -d "$(dirname "$env_file")" ] || mkdir -p -m 700 "$(dirname "$env_file")"
touch "$env_file"

stored() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }

vhosts=$(rmq list_vhosts)
for name in "$vhost" "$device_vhost"; do
  if ! grep -qx "$name" <<<"$vhosts"; then
    rmq add_vhost "$name"
    log "virtual host $name created"
  fi
done

ensure_user() {  # ensure_user ROLE VARIABLE_PREFIX VIRTUAL_HOST
  local user="agata-$1" prefix=$2 vhost=$3 password
  password=$(stored "${prefix}_PASSWORD")
  if ! rmq list_users | awk '{print $1}' | grep -qx "$user" || [ -z "$password" ]; then
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
    # the password goes on standard input, never on a command line other users can read
    if rmq list_users | awk '{print $1}' | grep -qx "$user"; then
      printf '%s\n' "$password" | rmq change_password "$user"
    else
      printf '%s\n' "$password" | rmq add_user "$user"
    fi
    log "user $user ready"
  fi
  rmq set_permissions -p "$vhost" "$user" '.*' '.*' '.*'
  {
    grep -v "^${prefix}_" "$env_file" || true
    echo "${prefix}_USERNAME=$user"
    echo "${prefix}_PASSWORD=$password"
    echo "${prefix}_VIRTUAL_HOST=$vhost"
  } >"$env_file.new"
  mv "$env_file.new" "$env_file"
}

ensure_user cloud AGATA_SERVER_BROKER "$vhost"
ensure_user device AGATA_CLIENT_BROKER "$device_vhost"
for name in "$vhost" "$device_vhost"; do
  if rmq list_permissions -p "$name" | awk '{print $1}' | grep -qx guest; then
    rmq clear_permissions -p "$name" guest
  fi
done
if $remove_guest && rmq list_users | awk '{print $1}' | grep -qx guest; then
  rmq delete_user guest
  log "user guest deleted"
fi
chmod 600 "$env_file"
log "settings written to $env_file (mode 0600); guest has no permission on $vhost or $device_vhost"
