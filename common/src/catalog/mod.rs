//! The catalog as agents and the collector use it: canonical SKU ids, their units and
//! packs, bundles, and how other systems spell SKUs and locations.
//!
//! The collector owns the catalog (its config) and distributes it to agents as a retained
//! JSON message (`topics::CATALOG`), so that normalisation happens at the edge, offline:
//! an agent converts `3 case` to `36 each` before journaling, and refuses an unknown unit or
//! alias while the sender is still listening. Invariant: a `Catalog` value has been
//! validated as a whole (ids unique, GTIN check digits right, aliases and bundle components
//! pointing at known SKUs, pack sizes whole and positive), so every conversion it makes is a
//! whole number of base units by construction.
//!
//! A catalog without SKUs is *open*: any SKU id is accepted and counted in eaches. That is
//! what an agent uses before it has ever received a catalog.

use std::collections::HashMap;

use crate::model::{Location, BASE_UNIT};

mod defs;
pub use defs::{AliasDef, BundleDef, CatalogConfig, ComponentDef, LocationAliasDef, SkuDef};

/// Converts a reported unit into the SKU's base unit. The catalog implements this; without
/// one only the base unit is known.
pub trait UnitResolver {
    /// Base units per one `unit` of `sku`, or an error text naming what is unknown.
    fn base_units_per(&self, sku: &str, unit: &str) -> Result<u64, String>;
    /// Canonical SKU for an id as the given source spells it (aliases); identity by default.
    fn canonical_sku(&self, _source: &str, sku: &str) -> Result<String, String> {
        Ok(sku.to_string())
    }
    /// The unit `sku` is counted in, assumed when a record names no unit.
    fn base_unit(&self, _sku: &str) -> String {
        BASE_UNIT.to_string()
    }
    /// The canonical location a source's warehouse or bin code stands for, if it is an alias.
    fn canonical_location(&self, _source: &str, _code: &str) -> Option<Location> {
        None
    }
}

/// The resolver used when no catalog is loaded: every SKU is counted in eaches.
pub struct BaseUnitOnly;

impl UnitResolver for BaseUnitOnly {
    fn base_units_per(&self, _sku: &str, unit: &str) -> Result<u64, String> {
        match unit {
            "each" | "ea" | "unit" | "pcs" => Ok(1),
            other => Err(format!(
                "unknown unit `{other}` (no catalog loaded; known: each)"
            )),
        }
    }
}

/// A catalog that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog field {field}: {detail}")]
pub struct CatalogError {
    /// Path of the offending entry, e.g. `skus[2].gtin`.
    pub field: String,
    pub detail: String,
}

fn invalid(field: String, detail: impl Into<String>) -> CatalogError {
    CatalogError {
        field,
        detail: detail.into(),
    }
}

/// Checks a GTIN-8/12/13/14 and its GS1 mod-10 check digit.
pub fn check_gtin(gtin: &str) -> Result<(), String> {
    crate::gs1::Gtin::parse(gtin)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// True if `id` has the shape of a GTIN (so a wrong check digit is worth naming).
fn looks_like_gtin(id: &str) -> bool {
    matches!(id.len(), 8 | 12 | 13 | 14) && id.bytes().all(|b| b.is_ascii_digit())
}

/// A GTIN in its 14-digit form, so GTIN-13 and its zero-padded GTIN-14 are one key.
fn gtin14(gtin: &str) -> String {
    crate::gs1::Gtin::parse(gtin).map_or_else(|_| gtin.to_string(), |g| g.to_string())
}

/// A validated catalog with its lookup indexes.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    config: CatalogConfig,
    /// Canonical id -> index in `config.skus`.
    skus: HashMap<String, usize>,
    gtins: HashMap<String, String>,
    aliases: HashMap<(String, String), String>,
    locations: HashMap<(String, String), Location>,
    bundles: HashMap<String, Vec<ComponentDef>>,
}

impl Catalog {
    /// Validates `config` and builds the indexes.
    pub fn new(config: CatalogConfig) -> Result<Catalog, CatalogError> {
        let mut c = Catalog::default();
        for (i, sku) in config.skus.iter().enumerate() {
            if c.skus.insert(sku.id.clone(), i).is_some() {
                return Err(invalid(
                    format!("skus[{i}].id"),
                    format!("`{}` is listed twice", sku.id),
                ));
            }
            if let Some(gtin) = &sku.gtin {
                check_gtin(gtin).map_err(|e| invalid(format!("skus[{i}].gtin"), e))?;
                if let Some(other) = c.gtins.insert(gtin14(gtin), sku.id.clone()) {
                    return Err(invalid(
                        format!("skus[{i}].gtin"),
                        format!("`{gtin}` is also the GTIN of `{other}`"),
                    ));
                }
            }
            for (unit, per) in &sku.packs {
                if *per == 0 || unit == &sku.base_unit {
                    return Err(invalid(
                        format!("skus[{i}].packs.{unit}"),
                        "a pack holds a whole, positive number of base units and is not named like the base unit",
                    ));
                }
            }
        }
        for (i, a) in config.aliases.iter().enumerate() {
            if !c.skus.contains_key(&a.sku) {
                return Err(invalid(
                    format!("aliases[{i}].sku"),
                    format!("`{}` is not a catalog SKU", a.sku),
                ));
            }
            let key = (a.source.clone(), a.external.clone());
            if c.aliases.insert(key, a.sku.clone()).is_some() {
                return Err(invalid(
                    format!("aliases[{i}].external"),
                    format!("`{}` of source `{}` is listed twice", a.external, a.source),
                ));
            }
        }
        for (i, l) in config.locations.iter().enumerate() {
            let location = Location {
                warehouse: l.warehouse.clone(),
                bin: l.bin.clone(),
            };
            if c.locations
                .insert((l.source.clone(), l.external.clone()), location)
                .is_some()
            {
                return Err(invalid(
                    format!("locations[{i}].external"),
                    format!("`{}` of source `{}` is listed twice", l.external, l.source),
                ));
            }
        }
        for (i, b) in config.bundles.iter().enumerate() {
            if b.components.is_empty() {
                return Err(invalid(
                    format!("bundles[{i}].components"),
                    "a bundle needs components",
                ));
            }
            for (j, part) in b.components.iter().enumerate() {
                if !c.skus.contains_key(&part.sku) || part.quantity == 0 || part.sku == b.sku {
                    return Err(invalid(
                        format!("bundles[{i}].components[{j}]"),
                        format!("`{}` x {} is not a known SKU other than the bundle in a positive quantity", part.sku, part.quantity),
                    ));
                }
            }
            c.bundles.insert(b.sku.clone(), b.components.clone());
        }
        c.config = config;
        Ok(c)
    }

    /// Reads a catalog as distributed on the catalog topic.
    pub fn from_json(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let config: CatalogConfig = serde_json::from_slice(bytes)
            .map_err(|e| invalid("$".into(), format!("unreadable catalog: {e}")))?;
        Catalog::new(config)
    }

    /// The catalog as distributed on the catalog topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config).expect("catalog serialises")
    }

    /// The catalog as configured.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// True when no SKUs are listed: any SKU is accepted, in eaches.
    pub fn is_open(&self) -> bool {
        self.skus.is_empty()
    }

    /// The components of a bundle SKU.
    pub fn bundle(&self, sku: &str) -> Option<&[ComponentDef]> {
        self.bundles.get(sku).map(Vec::as_slice)
    }

    /// Where a location code of `source` points, if it is an alias.
    pub fn location_alias(&self, source: &str, code: &str) -> Option<&Location> {
        self.locations.get(&(source.to_string(), code.to_string()))
    }
}

impl UnitResolver for Catalog {
    fn base_units_per(&self, sku: &str, unit: &str) -> Result<u64, String> {
        let Some(&i) = self.skus.get(sku) else {
            return BaseUnitOnly.base_units_per(sku, unit);
        };
        let def = &self.config.skus[i];
        if unit == def.base_unit {
            return Ok(1);
        }
        def.packs.get(unit).copied().ok_or_else(|| {
            let mut known = vec![def.base_unit.as_str()];
            known.extend(def.packs.keys().map(String::as_str));
            format!(
                "unknown unit `{unit}` for SKU `{sku}` (known: {})",
                known.join(", ")
            )
        })
    }

    fn base_unit(&self, sku: &str) -> String {
        match self.skus.get(sku) {
            Some(&i) => self.config.skus[i].base_unit.clone(),
            None => crate::model::BASE_UNIT.to_string(),
        }
    }

    fn canonical_sku(&self, source: &str, sku: &str) -> Result<String, String> {
        if let Some(canonical) = self.aliases.get(&(source.to_string(), sku.to_string())) {
            return Ok(canonical.clone());
        }
        if self.is_open() || self.skus.contains_key(sku) {
            return Ok(sku.to_string());
        }
        if looks_like_gtin(sku) {
            check_gtin(sku)?;
            if let Some(canonical) = self.gtins.get(&gtin14(sku)) {
                return Ok(canonical.clone());
            }
        }
        Err(format!(
            "unknown SKU `{sku}` from source `{source}`: not a catalog id, an alias of that source or a known GTIN"
        ))
    }

    fn canonical_location(&self, source: &str, code: &str) -> Option<Location> {
        self.location_alias(source, code).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let toml = r#"
            [[skus]]
            id = "MUG"
            gtin = "4006381333931"
            packs = { case = 12, inner = 6 }
            [[skus]]
            id = "LID"
            [[bundles]]
            sku = "MUG-SET"
            components = [{ sku = "MUG", quantity = 2 }, { sku = "LID", quantity = 1 }]
            [[aliases]]
            source = "erp"
            external = "100-MUG"
            sku = "MUG"
            [[locations]]
            source = "erp"
            external = "AMS-A01"
            warehouse = "ams"
            bin = "A-01"
        "#;
        Catalog::new(toml::from_str(toml).unwrap()).unwrap()
    }

    #[test]
    fn gtin_check_digits() {
        assert!(check_gtin("4006381333931").is_ok());
        assert!(check_gtin("96385074").is_ok());
        assert!(check_gtin("036000291452").is_ok());
        assert!(check_gtin("00036000291452").is_ok());
        assert!(check_gtin("4006381333932")
            .unwrap_err()
            .contains("check digit is 1"));
        assert!(check_gtin("40063813339").is_err());
        assert!(check_gtin("400638133393x").is_err());
    }

    #[test]
    fn converts_packs_to_base_units() {
        let c = catalog();
        assert_eq!(c.base_units_per("MUG", "case"), Ok(12));
        assert_eq!(c.base_units_per("MUG", "each"), Ok(1));
        assert!(c
            .base_units_per("MUG", "pallet")
            .unwrap_err()
            .contains("known: each, case, inner"));
        assert!(c.base_units_per("LID", "case").is_err());
    }

    #[test]
    fn resolves_aliases_and_gtins() {
        let c = catalog();
        assert_eq!(c.canonical_sku("erp", "100-MUG").as_deref(), Ok("MUG"));
        assert!(c.canonical_sku("wms", "100-MUG").is_err());
        assert_eq!(
            c.canonical_sku("scanner", "4006381333931").as_deref(),
            Ok("MUG")
        );
        assert_eq!(
            c.canonical_sku("scanner", "04006381333931").as_deref(),
            Ok("MUG")
        );
        assert!(c
            .canonical_sku("scanner", "4006381333932")
            .unwrap_err()
            .contains("check digit"));
        assert_eq!(
            c.canonical_location("erp", "AMS-A01")
                .unwrap()
                .bin
                .as_deref(),
            Some("A-01")
        );
        assert_eq!(c.bundle("MUG-SET").unwrap().len(), 2);
    }

    #[test]
    fn refuses_an_inconsistent_catalog() {
        let bad_gtin = r#"[[skus]]
            id = "A"
            gtin = "4006381333932""#;
        let e = Catalog::new(toml::from_str(bad_gtin).unwrap()).unwrap_err();
        assert_eq!(e.field, "skus[0].gtin");
        let dangling = r#"[[aliases]]
            source = "erp"
            external = "x"
            sku = "NOPE""#;
        assert_eq!(
            Catalog::new(toml::from_str(dangling).unwrap())
                .unwrap_err()
                .field,
            "aliases[0].sku"
        );
    }

    #[test]
    fn round_trips_as_json() {
        let c = catalog();
        let back = Catalog::from_json(&c.to_json()).unwrap();
        assert_eq!(back.config(), c.config());
    }

    #[test]
    fn an_open_catalog_takes_any_sku_in_eaches() {
        let c = Catalog::default();
        assert_eq!(c.canonical_sku("wms", "ANY").as_deref(), Ok("ANY"));
        assert_eq!(c.base_units_per("ANY", "each"), Ok(1));
        assert!(c.base_units_per("ANY", "case").is_err());
    }
}
