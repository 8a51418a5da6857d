//! What an event counts: its `epcList` (one unit per SGTIN, per GTIN) and `quantityList`
//! (classes with quantities) summed into one group per GTIN and unit, so an event names
//! each article once. Every refusal names the list element it came from.

use std::collections::BTreeMap;

use crate::gs1;

use super::decode::{refuse, Event, Refusal};

/// Quantities of one GTIN in one unit, summed over the event.
pub struct Group {
    pub gtin: String,
    pub uom: Option<String>,
    pub quantity: i64,
    pub lot: Option<String>,
    pub sku_path: String,
    pub quantity_path: String,
    pub unit_path: String,
}

/// Units CBV senders use for "each"; they mean the SKU's base unit.
fn unit_of(uom: Option<&str>) -> Option<String> {
    uom.filter(|u| !matches!(*u, "EA" | "C62" | "H87"))
        .map(str::to_string)
}

pub fn groups(event: &Event, is_count: bool) -> Result<Vec<Group>, Refusal> {
    let mut by_key: BTreeMap<(String, Option<String>), Group> = BTreeMap::new();
    let mut order = Vec::new();
    let mut add = |g: Group, order: &mut Vec<(String, Option<String>)>| -> Result<(), Refusal> {
        let key = (g.gtin.clone(), g.uom.clone());
        match by_key.get_mut(&key) {
            Some(have) => {
                have.quantity = have
                    .quantity
                    .checked_add(g.quantity)
                    .ok_or_else(|| refuse(&g.quantity_path, "the event's total overflows"))?;
                if have.lot != g.lot {
                    have.lot = None;
                }
            }
            None => {
                order.push(key.clone());
                by_key.insert(key, g);
            }
        }
        Ok(())
    };
    for (path, epc) in &event.epcs {
        let id = gs1::parse_item(epc).map_err(|e| {
            refuse(
                path,
                format!("{e}; epcList counts trade items by SGTIN or Digital Link"),
            )
        })?;
        if id.serial.is_none() {
            return Err(refuse(
                path,
                format!("`{epc}` names a class, not one instance: put it in quantityList"),
            ));
        }
        add(
            Group {
                gtin: id.gtin.to_string(),
                uom: None,
                quantity: 1,
                lot: None,
                sku_path: path.clone(),
                quantity_path: path.clone(),
                unit_path: path.clone(),
            },
            &mut order,
        )?;
    }
    for q in &event.quantities {
        let class_path = format!("{}.epcClass", q.path);
        let id = gs1::parse_item(&q.epc_class).map_err(|e| refuse(&class_path, e.to_string()))?;
        if id.serial.is_some() {
            return Err(refuse(
                &class_path,
                format!("`{}` names one instance: put it in epcList", q.epc_class),
            ));
        }
        let quantity = q.quantity.ok_or_else(|| {
            refuse(
                format!("{}.quantity", q.path),
                "a quantity is needed to count a class",
            )
        })?;
        add(
            Group {
                gtin: id.gtin.to_string(),
                uom: unit_of(q.uom.as_deref()),
                quantity,
                lot: id.lot,
                sku_path: class_path,
                quantity_path: format!("{}.quantity", q.path),
                unit_path: format!("{}.uom", q.path),
            },
            &mut order,
        )?;
    }
    let groups: Vec<Group> = order
        .into_iter()
        .filter_map(|k| by_key.remove(&k))
        .collect();
    if is_count {
        for (i, g) in groups.iter().enumerate() {
            if groups[..i].iter().any(|o| o.gtin == g.gtin) {
                return Err(refuse(
                    &g.unit_path,
                    format!(
                        "GTIN {} is counted in two units; a count names each GTIN once",
                        g.gtin
                    ),
                ));
            }
        }
    }
    Ok(groups)
}
