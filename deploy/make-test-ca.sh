#!/usr/bin/env bash
# Makes a private CA and every credential a stocksync site needs, with openssl and
# mosquitto_passwd:
#
#   deploy/make-test-ca.sh OUT_DIR [USER...]
#
# USERs default to `stocksync-collector ams-1 ber-1` (the users of deploy/mosquitto.acl);
# name each agent by its agent id. OUT_DIR is laid out like /etc/mosquitto, so the broker's
# part can be copied over as it is:
#
#   certs/stocksync-ca.crt, certs/stocksync-ca.key   the CA (keep the key offline)
#   certs/stocksync-server.crt, .key                  the broker's and the HTTPS listeners'
#                                                     certificate (SAN: localhost, 127.0.0.1
#                                                     and the names in $SERVER_NAMES)
#   clients/<user>.crt, .key, .password               per user: client certificate and key
#                                                     (CN = user) and MQTT password
#   stocksync.passwd                                  mosquitto password file, all users
#   stocksync.acl                                     a copy of deploy/mosquitto.acl
#   mosquitto-stocksync.conf                          deploy/mosquitto.conf with the paths
#                                                     above and ports $MQTT_PORT (plain,
#                                                     default 1883), $MQTTS_PORT (TLS,
#                                                     default 8883): a broker for trials
#                                                     and the end-to-end tests
#
# Certificates are EC P-256, valid for $DAYS days (default 825). Re-running into the same
# OUT_DIR keeps the CA and issues new user credentials. A production site may use its own
# PKI instead: stocksync needs only PEM files (see deploy/README.md).
set -euo pipefail

OUT=${1:?usage: make-test-ca.sh OUT_DIR [USER...]}
shift
USERS=("$@")
[ ${#USERS[@]} -gt 0 ] || USERS=(stocksync-collector ams-1 ber-1)
DAYS=${DAYS:-825}
MQTT_PORT=${MQTT_PORT:-1883}
MQTTS_PORT=${MQTTS_PORT:-8883}
SERVER_NAMES=${SERVER_NAMES:-}
HERE=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$OUT/certs" "$OUT/clients"
umask 077
cd "$OUT"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: a certificate for NAME.key signed by the CA.
sign() {
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA certs/stocksync-ca.crt -CAkey certs/stocksync-ca.key \
        -CAcreateserial -days "$DAYS" -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

if [ ! -f certs/stocksync-ca.key ]; then
    key certs/stocksync-ca.key
    openssl req -x509 -new -key certs/stocksync-ca.key -sha256 -days "$DAYS" \
        -subj "/O=stocksync/CN=stocksync test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out certs/stocksync-ca.crt
fi

SAN="DNS:localhost,IP:127.0.0.1"
for name in ${SERVER_NAMES//,/ }; do
    if [[ $name =~ ^[0-9.]+$ ]]; then SAN="$SAN,IP:$name"; else SAN="$SAN,DNS:$name"; fi
done
key certs/stocksync-server.key
CN=${SERVER_NAMES%%,*}
sign certs/stocksync-server "/O=stocksync/CN=${CN:-localhost}" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$SAN"

# Without mosquitto_passwd (the mosquitto package) the certificates are still made, e.g. for
# the HTTPS listeners, but no broker password file.
PASSWD=$(command -v mosquitto_passwd || true)
[ -n "$PASSWD" ] || echo "warning: mosquitto_passwd not found: no stocksync.passwd written" >&2
rm -f stocksync.passwd
for user in "${USERS[@]}"; do
    key "clients/$user.key"
    sign "clients/$user" "/O=stocksync/CN=$user" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    openssl rand -hex 24 > "clients/$user.password"
    if [ -z "$PASSWD" ]; then
        continue
    elif [ -f stocksync.passwd ]; then
        "$PASSWD" -b stocksync.passwd "$user" "$(cat "clients/$user.password")"
    else
        "$PASSWD" -c -b stocksync.passwd "$user" "$(cat "clients/$user.password")"
    fi
done

cp "$HERE/mosquitto.acl" stocksync.acl
sed -e "s|/etc/mosquitto/|$PWD/|g" \
    -e "s|^listener 1883 |listener $MQTT_PORT |" \
    -e "s|^listener 8883$|listener $MQTTS_PORT|" \
    "$HERE/mosquitto.conf" > mosquitto-stocksync.conf
# The broker reads its key, the password file and the ACL. Started as root, mosquitto drops
# to the `mosquitto` user: give that group read access where it exists.
chmod 0755 . certs
chmod 0700 clients
chmod 0644 certs/*.crt clients/*.crt mosquitto-stocksync.conf
touch stocksync.passwd
chmod 0640 certs/stocksync-server.key stocksync.passwd stocksync.acl
if getent group mosquitto >/dev/null 2>&1; then
    chgrp mosquitto certs/stocksync-server.key stocksync.passwd stocksync.acl
fi
echo "made CA, server and ${#USERS[@]} user credential(s) in $PWD"
