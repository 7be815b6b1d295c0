//! The local store's cryptography, with no I/O: the key derived from the password, sealed secret
//! files, and the header that says how the key is derived and checks the password.
//!
//! A key is PBKDF2-HMAC-SHA256 of the password with a random salt; the iteration count lives in
//! the header so that it can be raised later without breaking old stores. Every sealed blob is
//! AES-256-GCM under a fresh random 96-bit nonce, so one key can seal many files safely. A secret's
//! name is its associated data: a file renamed to another secret's name no longer opens.
//!
//! The header carries a check value (a known constant sealed under the key) and a SHA-256 digest of
//! its own fields. The digest tells a damaged header from a wrong password: when the digest holds
//! and the check value does not open, the password is wrong.

use std::fmt;
use std::num::NonZeroU32;

use ring::aead::{self, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::SecretValue;

/// The fewest PBKDF2 iterations a new store gets (OWASP's 2023 advice for PBKDF2-HMAC-SHA256).
pub const MIN_ITERATIONS: u32 = 600_000;

/// Test-only: when set to a number below [`MIN_ITERATIONS`], new stores and password changes use
/// that many iterations instead, so that tests do not spend seconds per key. It can only lower the
/// count, and the count used is recorded in the header, so a later `change-password` without it
/// raises the count again. Never set it in production.
pub const TEST_ITERATIONS_ENV: &str = "HYDROPLANE_SECRET_STORE_TEST_ITERATIONS";

/// The most iterations a header may claim, so a damaged header cannot make opening spin for hours.
const MAX_ITERATIONS: u32 = 100_000_000;

const FORMAT_VERSION: u32 = 1;
const KDF_NAME: &str = "pbkdf2-hmac-sha256";
const SALT_LEN: usize = 32;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = aead::NONCE_LEN;
const TAG_LEN: usize = 16;

/// Marks a sealed secret file and its format version, so a stray file is told from a damaged one.
const SECRET_MAGIC: &[u8; 4] = b"HPS1";
const SECRET_AAD_PREFIX: &[u8] = b"hydroplane-secret-v1\0";
const CHECK_AAD: &[u8] = b"hydroplane-secret-store-check-v1";
const CHECK_PLAINTEXT: &[u8] = b"hydroplane local secret store";

/// The iteration count for a new key: [`MIN_ITERATIONS`], or less when [`TEST_ITERATIONS_ENV`]
/// asks for less.
pub fn default_iterations() -> u32 {
    std::env::var(TEST_ITERATIONS_ENV)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|&count| count >= 1)
        .map_or(MIN_ITERATIONS, |count| count.min(MIN_ITERATIONS))
}

/// The random number generator failed; on Linux this does not happen once the system has booted.
#[derive(Debug)]
pub struct RandomFailed;

/// The AES-256-GCM key of one generation of a store.
pub struct StoreKey {
    key: LessSafeKey,
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

impl StoreKey {
    /// Derives the key from a password, as the header describes.
    fn derive(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> StoreKey {
        let mut key_bytes = Zeroizing::new([0u8; KEY_LEN]);
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut key_bytes[..]);
        let unbound =
            UnboundKey::new(&AES_256_GCM, &key_bytes[..]).expect("a 32-byte key is valid for AES-256-GCM");
        StoreKey { key: LessSafeKey::new(unbound) }
    }

    /// Seals `plaintext` as `nonce || ciphertext || tag`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, RandomFailed> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce_bytes).map_err(|_| RandomFailed)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(plaintext);
        // Sealing in place leaves only ciphertext in `sealed`: no plaintext copy outlives this.
        let mut body = sealed.split_off(NONCE_LEN);
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut body)
            .expect("AES-GCM seals any message shorter than 64 GiB");
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens what [`StoreKey::seal`] made; `None` when the key, the associated data or a byte differs.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<SecretValue> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce_bytes, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).ok()?;
        let mut buffer: SecretValue = Zeroizing::new(body.to_vec());
        let plaintext_len = self.key.open_in_place(nonce, Aad::from(aad), &mut buffer[..]).ok()?.len();
        buffer.truncate(plaintext_len);
        Some(buffer)
    }

    /// The sealed file of secret `name` holding `value`.
    pub fn seal_secret(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, RandomFailed> {
        let sealed = self.seal(&secret_aad(name), value)?;
        let mut file = Vec::with_capacity(SECRET_MAGIC.len() + sealed.len());
        file.extend_from_slice(SECRET_MAGIC);
        file.extend_from_slice(&sealed);
        Ok(file)
    }

    /// The value in the sealed file of secret `name`; `None` when the file was damaged, altered, or
    /// sealed for another name or under another key.
    pub fn open_secret(&self, name: &str, file: &[u8]) -> Option<SecretValue> {
        let sealed = file.strip_prefix(SECRET_MAGIC.as_slice())?;
        self.open(&secret_aad(name), sealed)
    }
}

fn secret_aad(name: &str) -> Vec<u8> {
    [SECRET_AAD_PREFIX, name.as_bytes()].concat()
}

/// How a generation's key is derived from the password, with a value that checks the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    format: u32,
    kdf: String,
    iterations: u32,
    /// Hex.
    salt: String,
    /// Hex of the check constant sealed under the key.
    check: String,
    /// Hex SHA-256 of the fields above, which tells damage from a wrong password.
    digest: String,
}

impl Header {
    /// A header with a fresh salt for `password`, and the key it describes.
    pub fn create(password: &[u8], iterations: u32) -> Result<(Header, StoreKey), RandomFailed> {
        let iterations = NonZeroU32::new(iterations.clamp(1, MAX_ITERATIONS)).expect("clamped to 1 or more");
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new().fill(&mut salt).map_err(|_| RandomFailed)?;
        let key = StoreKey::derive(password, &salt, iterations);
        let check = key.seal(CHECK_AAD, CHECK_PLAINTEXT)?;
        let mut header = Header {
            format: FORMAT_VERSION,
            kdf: KDF_NAME.to_owned(),
            iterations: iterations.get(),
            salt: hex_encode(&salt),
            check: hex_encode(&check),
            digest: String::new(),
        };
        header.digest = header.expected_digest();
        Ok((header, key))
    }

    /// Parses and checks a header file; the error says what is wrong, in words fit for a message.
    pub fn parse(bytes: &[u8]) -> Result<Header, &'static str> {
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|_| "the header is not valid JSON of the expected shape")?;
        if header.digest != header.expected_digest() {
            return Err("the header fails its digest check");
        }
        if header.format != FORMAT_VERSION {
            return Err("the header has a format version this build does not read");
        }
        if header.kdf != KDF_NAME {
            return Err("the header names an unknown key derivation");
        }
        if !(1..=MAX_ITERATIONS).contains(&header.iterations) {
            return Err("the header's iteration count is out of range");
        }
        if hex_decode(&header.salt).is_none_or(|salt| salt.len() != SALT_LEN) {
            return Err("the header's salt is malformed");
        }
        if hex_decode(&header.check).is_none_or(|check| check.len() < NONCE_LEN + TAG_LEN) {
            return Err("the header's check value is malformed");
        }
        Ok(header)
    }

    /// The header as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a header serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The PBKDF2 iteration count of this generation.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Derives the key from `password`; `None` when the check value says the password is wrong.
    /// Only call on a header from [`Header::parse`] or [`Header::create`].
    pub fn unlock(&self, password: &[u8]) -> Option<StoreKey> {
        let salt = hex_decode(&self.salt)?;
        let check = hex_decode(&self.check)?;
        let key = StoreKey::derive(password, &salt, NonZeroU32::new(self.iterations)?);
        let plaintext = key.open(CHECK_AAD, &check)?;
        (plaintext.as_slice() == CHECK_PLAINTEXT).then_some(key)
    }

    fn expected_digest(&self) -> String {
        let canonical =
            format!("{}|{}|{}|{}|{}", self.format, self.kdf, self.iterations, self.salt, self.check);
        hex_encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|byte| [DIGITS[usize::from(byte >> 4)], DIGITS[usize::from(byte & 0xf)]])
        .map(char::from)
        .collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// A random identifier for a generation directory: 16 lowercase hex digits.
pub fn random_id() -> Result<String, RandomFailed> {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomFailed)?;
    Ok(hex_encode(&bytes))
}

/// Whether `text` is what [`random_id`] makes.
pub fn is_random_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEW: u32 = 10;

    #[test]
    fn header_round_trips_and_unlocks_only_with_its_password() {
        let (header, key) = Header::create(b"right", FEW).unwrap();
        let parsed = Header::parse(&header.to_bytes()).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(parsed.iterations(), FEW);
        assert!(parsed.unlock(b"wrong").is_none());
        let unlocked = parsed.unlock(b"right").unwrap();
        let sealed = key.seal_secret("name", b"value").unwrap();
        assert_eq!(unlocked.open_secret("name", &sealed).unwrap().as_slice(), b"value");
    }

    #[test]
    fn any_changed_header_field_is_damage_not_a_wrong_password() {
        let (header, _) = Header::create(b"pw", FEW).unwrap();
        let text = String::from_utf8(header.to_bytes()).unwrap();
        let tampered = [
            text.replace(&format!("\"iterations\": {FEW}"), "\"iterations\": 11"),
            text.replacen(&header.salt[..2], if &header.salt[..2] == "00" { "01" } else { "00" }, 1),
            text.replace(&header.check, &header.check.chars().rev().collect::<String>()),
            text[..text.len() / 2].to_owned(),
        ];
        for bad in tampered {
            assert_ne!(bad, text);
            assert!(Header::parse(bad.as_bytes()).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let (_, key) = Header::create(b"pw", FEW).unwrap();
        let first = key.seal_secret("a", b"same").unwrap();
        let second = key.seal_secret("a", b"same").unwrap();
        assert_ne!(first, second);
        assert_ne!(first[4..4 + NONCE_LEN], second[4..4 + NONCE_LEN]);
    }

    #[test]
    fn sealed_files_hold_no_plaintext_and_open_only_under_their_name() {
        let (_, key) = Header::create(b"pw", FEW).unwrap();
        let value = b"plaintext-marker-0123456789";
        let sealed = key.seal_secret("aws-credentials", value).unwrap();
        assert!(!sealed.windows(value.len()).any(|window| window == value));
        assert!(key.open_secret("aws-credentials", &sealed).is_some());
        assert!(key.open_secret("other", &sealed).is_none());
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_detected() {
        let (_, key) = Header::create(b"pw", FEW).unwrap();
        let sealed = key.seal_secret("s", b"\x00\xff binary").unwrap();
        for index in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[index] ^= 1 << bit;
                assert!(key.open_secret("s", &bad).is_none(), "byte {index} bit {bit}");
            }
            assert!(key.open_secret("s", &sealed[..index]).is_none(), "truncated to {index}");
        }
    }

    #[test]
    fn another_key_does_not_open_a_file() {
        let (_, key) = Header::create(b"pw", FEW).unwrap();
        let (_, other) = Header::create(b"pw", FEW).unwrap();
        let sealed = key.seal_secret("s", b"v").unwrap();
        assert!(other.open_secret("s", &sealed).is_none());
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)).unwrap(), bytes);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
        assert!(hex_decode("AB").is_none());
    }

    #[test]
    fn random_ids_are_recognised() {
        let id = random_id().unwrap();
        assert!(is_random_id(&id));
        assert!(!is_random_id("../../etc/passwd"));
        assert!(!is_random_id(&id.to_uppercase()));
    }

    #[test]
    fn key_debug_is_redacted() {
        let (_, key) = Header::create(b"pw", FEW).unwrap();
        assert_eq!(format!("{key:?}"), "StoreKey(<redacted>)");
    }
}
