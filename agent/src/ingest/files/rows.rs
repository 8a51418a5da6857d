//! Reading a WMS CSV export row by row into movement records.
//!
//! Columns are found by header name (renamable in config), so a WMS may add, drop or reorder
//! columns without breaking the import. UTF-8 with or without a byte order mark; the
//! delimiter (`,`, `;` or tab) is whatever the header line uses most; quoted fields as RFC
//! 4180. Each row becomes a `MovementInput` and goes through `input::validate` like the
//! JSON input; an error names the row's line in the file and the column.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use crate::input::{InputKind, MovementInput};
use serde_json::Value;
use stocksync_common::gs1::Gtin;

/// Our column names; `columns` in config maps them to the WMS's headers.
pub const COLUMNS: &[&str] = &[
    "sku",
    "gtin",
    "location",
    "bin",
    "quantity",
    "unit",
    "kind",
    "occurred_at",
    "reference",
    "id",
    "direction",
    "reason",
    "outcome",
    "note",
];

/// One refused row (or the header, line 1): where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub reason: String,
}

/// A CSV reader positioned after the header, with the columns found in it.
pub struct Rows<R: Read> {
    reader: csv::Reader<BufReader<R>>,
    index: HashMap<&'static str, usize>,
    headers: HashMap<&'static str, String>,
    record: csv::StringRecord,
}

/// Skips a UTF-8 BOM and guesses the delimiter from the header line.
fn sniff<R: Read>(mut input: BufReader<R>) -> std::io::Result<(BufReader<R>, u8)> {
    let buf = input.fill_buf()?;
    if buf.starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    let buf = input.fill_buf()?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(buf);
    let count = |d: u8| line.iter().filter(|b| **b == d).count();
    let delimiter = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|d| (count(*d), *d == b','))
        .unwrap_or(b',');
    Ok((input, delimiter))
}

impl<R: Read> Rows<R> {
    /// Reads the header; an error names line 1 and the missing column.
    pub fn open(
        input: R,
        renames: &std::collections::BTreeMap<String, String>,
    ) -> Result<Rows<R>, RowError> {
        let header_error = |column: &str, reason: String| RowError {
            line: 1,
            column: column.into(),
            reason,
        };
        let (input, delimiter) = sniff(BufReader::with_capacity(1 << 16, input))
            .map_err(|e| header_error("", e.to_string()))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .from_reader(input);
        let found: Vec<String> = reader
            .headers()
            .map_err(|e| header_error("", format!("unreadable header: {e}")))?
            .iter()
            .map(|h| h.trim().to_lowercase())
            .collect();
        let (mut index, mut headers) = (HashMap::new(), HashMap::new());
        for name in COLUMNS {
            let header = renames
                .get(*name)
                .map_or(name.to_string(), |h| h.trim().to_lowercase());
            if let Some(i) = found.iter().position(|f| *f == header) {
                index.insert(*name, i);
                headers.insert(*name, header);
            }
        }
        for required in ["quantity", "kind"] {
            if !index.contains_key(required) {
                return Err(header_error(
                    required,
                    format!(
                        "no `{required}` column in the header ({})",
                        found.join(", ")
                    ),
                ));
            }
        }
        if !index.contains_key("sku") && !index.contains_key("gtin") {
            return Err(header_error(
                "sku",
                "the header needs a `sku` or a `gtin` column".into(),
            ));
        }
        Ok(Rows {
            reader,
            index,
            headers,
            record: csv::StringRecord::new(),
        })
    }

    /// The header name of one of our columns, as the file spells it.
    pub fn header(&self, column: &str) -> String {
        self.headers
            .get(column)
            .cloned()
            .unwrap_or_else(|| column.to_string())
    }

    fn get(&self, column: &str) -> Option<String> {
        let v = self.record.get(*self.index.get(column)?)?.trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    /// The next row as a record and its line; `None` at the end.
    pub fn next_row(&mut self) -> Option<(u64, Result<MovementInput, RowError>)> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some((line, self.input(line)))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                Some((
                    line,
                    Err(RowError {
                        line,
                        column: String::new(),
                        reason: e.to_string(),
                    }),
                ))
            }
        }
    }

    fn input(&self, line: u64) -> Result<MovementInput, RowError> {
        let err = |column: &str, reason: String| RowError {
            line,
            column: self.header(column),
            reason,
        };
        let kind_text = self
            .get("kind")
            .ok_or_else(|| err("kind", "empty".into()))?;
        let kind: InputKind = serde_json::from_value(Value::String(kind_text.to_lowercase()))
            .map_err(|_| err("kind", format!("`{kind_text}` is not a movement kind")))?;
        let sku = match (self.get("sku"), self.get("gtin")) {
            (Some(sku), _) => sku,
            (None, Some(gtin)) => Gtin::parse(&gtin)
                .map_err(|e| err("gtin", e.to_string()))?
                .to_string(),
            (None, None) => return Err(err("sku", "neither sku nor gtin is given".into())),
        };
        let quantity_text = self
            .get("quantity")
            .ok_or_else(|| err("quantity", "empty".into()))?;
        let quantity = quantity_text.parse::<i64>().map_err(|_| {
            err(
                "quantity",
                format!("`{quantity_text}` is not a whole number"),
            )
        })?;
        let reference = self.get("reference");
        let is_transfer = matches!(kind, InputKind::TransferIn | InputKind::TransferOut);
        Ok(MovementInput {
            sku,
            kind,
            quantity,
            unit: self.get("unit"),
            warehouse: self.get("location"),
            bin: self.get("bin"),
            source: None,
            occurred_at: self.get("occurred_at"),
            direction: self.word("direction", line)?,
            reason: self.get("reason"),
            outcome: self.word("outcome", line)?,
            order: reference.clone().filter(|_| !is_transfer),
            transfer: reference.filter(|_| is_transfer),
            return_id: None,
            peer_warehouse: None,
            id: self.get("id"),
            note: self.get("note"),
        })
    }

    /// A snake_case word column (`direction`, `outcome`) as its enum.
    fn word<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
        line: u64,
    ) -> Result<Option<T>, RowError> {
        let Some(text) = self.get(column) else {
            return Ok(None);
        };
        serde_json::from_value(Value::String(text.to_lowercase()))
            .map(Some)
            .map_err(|_| RowError {
                line,
                column: self.header(column),
                reason: format!("`{text}` is not a known {column}"),
            })
    }

    /// The column a validation error's field came from.
    pub fn column_of(&self, field: &str, gtin_given: bool) -> String {
        let column = match field {
            "sku" if gtin_given && !self.index.contains_key("sku") => "gtin",
            "warehouse" => "location",
            "order" | "transfer" | "return" => "reference",
            other => other,
        };
        self.header(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Result<MovementInput, RowError>> {
        let mut rows = Rows::open(text.as_bytes(), &Default::default()).unwrap();
        std::iter::from_fn(|| rows.next_row().map(|(_, r)| r)).collect()
    }

    #[test]
    fn bom_semicolons_tabs_and_quotes() {
        let r = rows("\u{feff}SKU;Quantity;Kind;Note\nMUG;3;receipt;\"a; b\"\n");
        let m = r[0].as_ref().unwrap();
        assert_eq!(
            (m.sku.as_str(), m.quantity, m.note.as_deref()),
            ("MUG", 3, Some("a; b"))
        );
        let r = rows("gtin\tquantity\tkind\n9520123456788\t2\tshipment\n");
        assert_eq!(r[0].as_ref().unwrap().sku, "09520123456788");
        let r =
            rows("sku,quantity,kind\n\"MUG, large\",1,receipt\nMUG,x,receipt\nMUG,1,teleport\n");
        assert_eq!(r[0].as_ref().unwrap().sku, "MUG, large");
        assert_eq!(
            r[1].as_ref().unwrap_err(),
            &RowError {
                line: 3,
                column: "quantity".into(),
                reason: "`x` is not a whole number".into()
            }
        );
        assert_eq!(r[2].as_ref().unwrap_err().column, "kind");
    }

    #[test]
    fn renamed_and_missing_columns() {
        let renames = [("sku".to_string(), "Article".to_string())]
            .into_iter()
            .collect();
        let mut rows = Rows::open(
            "article,quantity,kind\nMUG,1,receipt\n".as_bytes(),
            &renames,
        )
        .unwrap();
        assert_eq!(rows.next_row().unwrap().1.unwrap().sku, "MUG");
        let e = Rows::open("sku,kind\n".as_bytes(), &Default::default())
            .err()
            .unwrap();
        assert_eq!((e.line, e.column.as_str()), (1, "quantity"));
    }
}
