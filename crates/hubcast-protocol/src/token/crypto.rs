//! jsonwebtoken's signatures on `ring`, the tree's one crypto library (rustls
//! uses it for every TLS connection).
//!
//! Since version 10, jsonwebtoken leaves its cryptography to a
//! [`CryptoProvider`] and ships two: `aws_lc_rs` (a second native crypto
//! library beside ring, with its own C build) and `rust_crypto` (`rsa`,
//! `p256`, `p384`, `ed25519-dalek`, `hmac`, `sha2`: a second implementation of
//! every algorithm). Neither is ring, which jsonwebtoken 9 used; this provider
//! puts it back, with the same key formats (PKCS#1 DER for RSA, PKCS#8 for
//! ECDSA and Ed25519 private keys, the raw public key bytes for verifying).
//!
//! [`install`] makes it the process default. [`super::verify`] and
//! [`super::encode`] call it, so users of this crate need not; code that calls
//! `jsonwebtoken` directly must call it first (jsonwebtoken panics without a
//! provider). Only signing and verifying are provided: building JWKs from keys
//! (`KeyUtils`) is not, and hubcast never does it.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature as sig;

/// The provider: every algorithm jsonwebtoken names, on ring.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`PROVIDER`] as jsonwebtoken's process-wide provider, unless one
/// is installed already (then that one stays). Cheap after the first call.
pub fn install() {
    if CryptoProvider::try_get_default().is_none() {
        // Losing a race to another thread installing it is fine: either way
        // a provider is installed.
        let _ = PROVIDER.install_default();
    }
}

fn family_is(family: AlgorithmFamily, expected: AlgorithmFamily) -> Result<(), Error> {
    if family == expected {
        Ok(())
    } else {
        Err(ErrorKind::InvalidKeyFormat.into())
    }
}

enum SigningKey {
    Hmac(hmac::Key),
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

struct RingSigner {
    alg: Algorithm,
    key: SigningKey,
}

fn signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let der = key.as_bytes();
    let rsa = |encoding: &'static dyn sig::RsaEncoding| -> Result<SigningKey, Error> {
        family_is(key.family(), AlgorithmFamily::Rsa)?;
        let pair =
            sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
        Ok(SigningKey::Rsa(pair, encoding))
    };
    let ecdsa = |alg: &'static sig::EcdsaSigningAlgorithm| -> Result<SigningKey, Error> {
        family_is(key.family(), AlgorithmFamily::Ec)?;
        let pair = sig::EcdsaKeyPair::from_pkcs8(alg, der, &SystemRandom::new())
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?;
        Ok(SigningKey::Ecdsa(pair))
    };
    let hmac = |alg: hmac::Algorithm| -> Result<SigningKey, Error> {
        family_is(key.family(), AlgorithmFamily::Hmac)?;
        Ok(SigningKey::Hmac(hmac::Key::new(alg, der)))
    };
    let signing = match alg {
        Algorithm::HS256 => hmac(hmac::HMAC_SHA256)?,
        Algorithm::HS384 => hmac(hmac::HMAC_SHA384)?,
        Algorithm::HS512 => hmac(hmac::HMAC_SHA512)?,
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256)?,
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384)?,
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512)?,
        Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256)?,
        Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384)?,
        Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512)?,
        Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)?,
        Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING)?,
        Algorithm::EdDSA => {
            family_is(key.family(), AlgorithmFamily::Ed)?;
            // `maybe_unchecked`: PKCS#8 v1 (no public key inside) too, as
            // OpenSSL writes Ed25519 keys and as jsonwebtoken 9 accepted.
            let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| ErrorKind::InvalidEddsaKey)?;
            SigningKey::Ed25519(pair)
        }
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingSigner {
        alg: *alg,
        key: signing,
    }))
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
            SigningKey::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

enum VerifyingKey {
    Hmac(hmac::Key),
    /// A public key as bytes: PKCS#1 `RSAPublicKey` DER, an uncompressed EC
    /// point, or an Ed25519 key.
    Public(&'static dyn sig::VerificationAlgorithm, Vec<u8>),
    /// An RSA public key as its modulus and exponent (from a JWK).
    RsaComponents(&'static sig::RsaParameters, Vec<u8>, Vec<u8>),
}

struct RingVerifier {
    alg: Algorithm,
    key: VerifyingKey,
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let public = |family: AlgorithmFamily,
                  alg: &'static dyn sig::VerificationAlgorithm|
     -> Result<VerifyingKey, Error> {
        family_is(key.family(), family)?;
        Ok(VerifyingKey::Public(alg, key.try_get_as_bytes()?.to_vec()))
    };
    let rsa = |params: &'static sig::RsaParameters| -> Result<VerifyingKey, Error> {
        family_is(key.family(), AlgorithmFamily::Rsa)?;
        Ok(match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => VerifyingKey::Public(params, der.clone()),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                VerifyingKey::RsaComponents(params, n.clone(), e.clone())
            }
        })
    };
    let hmac = |alg: hmac::Algorithm| -> Result<VerifyingKey, Error> {
        family_is(key.family(), AlgorithmFamily::Hmac)?;
        Ok(VerifyingKey::Hmac(hmac::Key::new(
            alg,
            key.try_get_as_bytes()?,
        )))
    };
    let verifying = match alg {
        Algorithm::HS256 => hmac(hmac::HMAC_SHA256)?,
        Algorithm::HS384 => hmac(hmac::HMAC_SHA384)?,
        Algorithm::HS512 => hmac(hmac::HMAC_SHA512)?,
        Algorithm::RS256 => rsa(&sig::RSA_PKCS1_2048_8192_SHA256)?,
        Algorithm::RS384 => rsa(&sig::RSA_PKCS1_2048_8192_SHA384)?,
        Algorithm::RS512 => rsa(&sig::RSA_PKCS1_2048_8192_SHA512)?,
        Algorithm::PS256 => rsa(&sig::RSA_PSS_2048_8192_SHA256)?,
        Algorithm::PS384 => rsa(&sig::RSA_PSS_2048_8192_SHA384)?,
        Algorithm::PS512 => rsa(&sig::RSA_PSS_2048_8192_SHA512)?,
        Algorithm::ES256 => public(AlgorithmFamily::Ec, &sig::ECDSA_P256_SHA256_FIXED)?,
        Algorithm::ES384 => public(AlgorithmFamily::Ec, &sig::ECDSA_P384_SHA384_FIXED)?,
        Algorithm::EdDSA => public(AlgorithmFamily::Ed, &sig::ED25519)?,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: verifying,
    }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified = match &self.key {
            // Constant time, as ring's hmac::verify is.
            VerifyingKey::Hmac(key) => hmac::verify(key, msg, signature),
            VerifyingKey::Public(alg, bytes) => {
                sig::UnparsedPublicKey::new(*alg, bytes).verify(msg, signature)
            }
            VerifyingKey::RsaComponents(params, n, e) => sig::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(params, msg, signature),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}
