//! The catalog as configured (`[catalog]` in the collector's config) and as distributed to
//! agents (JSON on `topics::CATALOG`): plain definitions, validated as a whole by `Catalog`.

use serde::{Deserialize, Serialize};

/// The product catalog: what the canonical ids are and how other systems spell them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    pub skus: Vec<SkuDef>,
    pub bundles: Vec<BundleDef>,
    pub aliases: Vec<AliasDef>,
    /// Location codes of other systems, e.g. an ERP's `AMS-DC1-A01` -> `ams` / `A-01`.
    pub locations: Vec<LocationAliasDef>,
}

/// How a source system spells a warehouse or a bin.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocationAliasDef {
    pub source: String,
    /// The code as that system spells it (in a record's `warehouse` or `bin` field).
    pub external: String,
    pub warehouse: String,
    #[serde(default)]
    pub bin: Option<String>,
}

/// One canonical SKU.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SkuDef {
    pub id: String,
    #[serde(default)]
    pub gtin: Option<String>,
    /// The unit stock is counted in (default `each`).
    #[serde(default = "default_base_unit")]
    pub base_unit: String,
    /// Pack sizes in base units, e.g. `{ case = 12, inner = 6 }`.
    #[serde(default)]
    pub packs: std::collections::BTreeMap<String, u64>,
}

fn default_base_unit() -> String {
    crate::model::BASE_UNIT.to_string()
}

/// A bundle or kit: sold as one SKU, stocked as its components.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleDef {
    pub sku: String,
    pub components: Vec<ComponentDef>,
}

/// One component of a bundle.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComponentDef {
    pub sku: String,
    pub quantity: u64,
}

/// How a source system or channel spells a canonical SKU.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AliasDef {
    /// Source system (`wms`, `erp`, ...) or channel name.
    pub source: String,
    /// The id as that system spells it.
    pub external: String,
    /// The canonical SKU id.
    pub sku: String,
}
