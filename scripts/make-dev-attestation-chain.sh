#!/bin/sh
# Makes the development attestation chain (src/dev/devAttestationChain.ts): a P-384 root, an
# intermediate and a leaf, shaped like AWS's Nitro chain, valid for 30 years from today. Its keys
# are committed on purpose: nothing it signs proves anything, which is what a development root is.
#   scripts/make-dev-attestation-chain.sh > src/dev/devAttestationChain.ts && npx biome format --write src/dev/devAttestationChain.ts
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
days=10950
key() { openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1.key"; }
cat > ext.cnf <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
subject='/C=US/O=oyster-serverless development/OU=not an enclave'
key root
openssl req -x509 -new -key root.key -sha384 -days "$days" -subj "$subject/CN=development root" \
  -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature' \
  -out root.pem
key intermediate
openssl req -new -key intermediate.key -subj "$subject/CN=development intermediate" -out intermediate.csr
openssl x509 -req -in intermediate.csr -CA root.pem -CAkey root.key -CAcreateserial -sha384 -days "$days" \
  -extfile ext.cnf -extensions ca -out intermediate.pem
key leaf
openssl req -new -key leaf.key -subj "$subject/CN=development enclave" -out leaf.csr
openssl x509 -req -in leaf.csr -CA intermediate.pem -CAkey intermediate.key -CAcreateserial -sha384 -days "$days" \
  -extfile ext.cnf -extensions leaf -out leaf.pem

constant() { printf '\n/** %s */\nexport const %s = `%s\n`;\n' "$1" "$2" "$(cat "$3")"; }
printf '%s\n' '// Made by scripts/make-dev-attestation-chain.sh. Development only: these keys are public, so a'
printf '%s\n' '// document they sign proves nothing; the verifier accepts one only when told to trust this root.'
constant 'The development root certificate, served by the development attestation server at /root.pem.' devRootPem root.pem
constant 'Signed by the root; the cabundle holds it after the root.' devIntermediatePem intermediate.pem
constant "The development enclave's certificate, signed by the intermediate." devLeafPem leaf.pem
constant "The leaf's private key (PKCS #8), which signs each development document." devLeafKeyPem leaf.key
