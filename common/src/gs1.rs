//! The GS1 keys both processes compare: GTINs and GLNs, each in one canonical form.
//!
//! Partners agree on stock only when they agree on identity: the catalog (which the
//! collector distributes to agents) keys trade items by GTIN-14, so a GTIN-13
//! `9520123456788` and its padded `09520123456788` are the same article on both sides.
//! Invariant: a value of `Gtin` or `Gln` has the right length and GS1 check digit by
//! construction. Reading the forms warehouses send (SGTIN / LGTIN / SGLN URNs, GS1 Digital
//! Link URIs) is the agent's (`stocksync_agent::gs1`): only agents receive them.

use std::fmt;

/// Why a text is not the GS1 identifier it was expected to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("`{0}` is not a GTIN: expected 8, 12, 13 or 14 digits")]
    GtinShape(String),
    #[error("`{0}` is not a GLN: expected 13 digits")]
    GlnShape(String),
    #[error("`{text}` has check digit {found} but its GS1 check digit is {expected}")]
    CheckDigit {
        text: String,
        found: u32,
        expected: u32,
    },
    #[error("`{text}` is not a valid {form}: {detail}")]
    Malformed {
        text: String,
        form: &'static str,
        detail: String,
    },
    #[error("`{0}` is not a GS1 identifier this system reads (SGTIN, LGTIN, idpat SGTIN, SGLN URN or GS1 Digital Link)")]
    Unknown(String),
}

/// A GTIN in its 14-digit form, check digit verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtin(String);

/// A GLN (13 digits), check digit verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gln(String);

/// The GS1 mod-10 check digit of the digits before it: weights 3,1,3,... from the right.
pub fn check_digit(body: &[u8]) -> u32 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 0 {
                d * 3
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn verify(text: &str) -> Result<(), Gs1Error> {
    let (body, check) = text.as_bytes().split_at(text.len() - 1);
    let expected = check_digit(body);
    let found = u32::from(check[0] - b'0');
    if found != expected {
        return Err(Gs1Error::CheckDigit {
            text: text.to_string(),
            found,
            expected,
        });
    }
    Ok(())
}

/// Non-empty and ASCII digits only.
pub fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Gtin {
    /// A GTIN-8, -12, -13 or -14 with a correct check digit, normalised to 14 digits.
    pub fn parse(text: &str) -> Result<Gtin, Gs1Error> {
        if !matches!(text.len(), 8 | 12 | 13 | 14) || !all_digits(text) {
            return Err(Gs1Error::GtinShape(text.to_string()));
        }
        verify(text)?;
        Ok(Gtin(format!("{text:0>14}")))
    }

    /// Builds the GTIN-14 from indicator digit, company prefix and item reference digits
    /// (13 digits together), computing the check digit. `body13` must be 13 ASCII digits.
    pub fn from_parts(body13: &str) -> Gtin {
        Gtin(format!("{body13}{}", check_digit(body13.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Gtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Gln {
    /// A 13-digit GLN with a correct check digit.
    pub fn parse(text: &str) -> Result<Gln, Gs1Error> {
        if text.len() != 13 || !all_digits(text) {
            return Err(Gs1Error::GlnShape(text.to_string()));
        }
        verify(text)?;
        Ok(Gln(text.to_string()))
    }

    /// Builds the GLN from company prefix and location reference digits (12 together),
    /// computing the check digit. `body12` must be 12 ASCII digits.
    pub fn from_parts(body12: &str) -> Gln {
        Gln(format!("{body12}{}", check_digit(body12.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Gln {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
