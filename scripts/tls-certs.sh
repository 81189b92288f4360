#!/usr/bin/env bash
# Makes the certificates the TLS tests use, with openssl, into one directory (default
# $ADWORKER_DEV_DATA_DIR/tls): a test CA and a second, unrelated CA; a server certificate for
# localhost, 127.0.0.1 and ::1; a client certificate for mutual TLS; and a server certificate that
# expired in 2020. Safe to run again: an existing, complete and current set is kept.
set -euo pipefail

DIR=${1:-${ADWORKER_DEV_DATA_DIR:-/var/tmp/adworker-dev}/tls}
log() { printf '[tls-certs] %s\n' "$*" >&2; }

files=(ca.crt other-ca.crt server.crt server.key client.crt client.key expired.crt expired.key)
complete=1
for file in "${files[@]}"; do [ -s "$DIR/$file" ] || complete=0; done
# A set made before the server certificate could also act as a client (cluster bus) is made again.
if [ $complete = 1 ] && openssl x509 -checkend 86400 -noout -in "$DIR/server.crt" >/dev/null \
    && openssl x509 -noout -ext extendedKeyUsage -in "$DIR/server.crt" | grep -q 'Client Authentication'; then
    echo "$DIR"
    exit 0
fi

mkdir -p "$DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

authority() { # name subject
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$2" \
        -keyout "$1.key" -out "$1.crt" 2>/dev/null
}
# signed name subject extensions [startdate enddate]: a key and a certificate signed by ca.
signed() {
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    if [ $# -gt 3 ]; then
        # openssl x509 cannot date a certificate in the past; openssl ca can.
        mkdir -p db && : > db/index && echo 01 > db/serial
        cat > ca.conf <<CONF
[ca]
default_ca = test
[test]
database = db/index
serial = db/serial
new_certs_dir = db
certificate = ca.crt
private_key = ca.key
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
CONF
        openssl ca -batch -config ca.conf -notext -startdate "$4" -enddate "$5" -extfile "$1.ext" \
            -in "$1.csr" -out "$1.crt" 2>/dev/null
    else
        openssl x509 -req -sha256 -days 825 -CA ca.crt -CAkey ca.key -CAcreateserial \
            -extfile "$1.ext" -in "$1.csr" -out "$1.crt" 2>/dev/null
    fi
}

# clientAuth too: Redis Cluster nodes present their certificate to each other on the bus, and the
# bus always asks for one.
server_ext='subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
extendedKeyUsage = serverAuth, clientAuth'
authority ca "adworker test CA"
authority other-ca "an unrelated CA"
signed server localhost "$server_ext"
signed client adworker 'extendedKeyUsage = clientAuth'
signed expired localhost "$server_ext" 20200101000000Z 20200102000000Z

install -m 644 ca.crt other-ca.crt server.crt client.crt expired.crt "$DIR/"
# Keys readable by their owner only; redis-server runs as the same user as this script.
install -m 600 server.key client.key expired.key "$DIR/"
log "certificates in $DIR"
echo "$DIR"
