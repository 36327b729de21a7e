// The sizes of a Nitro attestation document and its fields, as the Nitro Secure Module bounds them
// (AWS's "attestation process" page). Kept apart from the decoder so the service's hot path can
// bound a download without loading a CBOR library.

/**
 * Largest document read: the module's are about 4.5 KiB (four certificates of at most 1 KiB, 16 to
 * 32 PCRs, three fields of at most 1 KiB). Anything larger is refused before a byte is decoded.
 */
export const maxDocumentBytes = 64 * 1024;
export const maxPcrs = 32;
export const maxCertificateBytes = 1024;
export const maxPublicKeyBytes = 1024;
export const maxUserDataBytes = 512;
export const maxNonceBytes = 512;
