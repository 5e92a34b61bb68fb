//! PartnerStack simulator record lifecycle: a partner deleting a deal, and the `deal.deleted`
//! webhook body PartnerStack sends for it.

use serde_json::{Value, json};

use super::PartnerStackSim;

impl PartnerStackSim {
    /// Deletes a deal as a partner would; returns the `deal.deleted` webhook body for it, or
    /// `None` when there is no such deal.
    pub fn delete_deal(&self, key: &str) -> Option<Value> {
        let now = self.clock.tick();
        let mut deal = self.lock().deals.remove(key)?;
        deal.insert("updated_at".into(), json!(now));
        Some(json!({"event": "deal.deleted", "data": deal}))
    }
}
