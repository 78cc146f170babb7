//! What the API has set: the rules of `--config`, those set with
//! `pygocentrus set`, Toxiproxy's proxies; and the [`Plan`] they make.

use super::toxi::{ApiError, Proxy};
use crate::rules::{Plan, RuleArgs, RuleSpec};

/// Everything the API set, and the rules it started with.
#[derive(Clone, Debug, Default)]
pub struct ApiState {
    /// Rules of `--config`, kept by `reset`.
    pub base: Vec<RuleSpec>,
    /// Rules set with `pygocentrus set`, by name, in the order set.
    pub rules: Vec<(String, RuleSpec, RuleArgs)>,
    /// Toxiproxy's proxies, in the order created.
    pub proxies: Vec<Proxy>,
    /// `--container`/`--netns` label of every rule.
    pub endpoint: Option<String>,
}

impl ApiState {
    /// The plan, and who owns each of its rules (`config rule 1`,
    /// `rule NAME`, `proxy NAME upstream`).
    pub(super) fn plan(&self) -> Result<(Plan, Vec<String>), ApiError> {
        let mut rules = Vec::new();
        let mut owners = Vec::new();
        for (i, r) in self.base.iter().enumerate() {
            rules.push(r.clone());
            owners.push(format!("config rule {}", i + 1));
        }
        for (name, r, _) in &self.rules {
            rules.push(r.clone());
            owners.push(format!("rule {name}"));
        }
        for p in &self.proxies {
            for r in p.rules(self.endpoint.as_deref())? {
                owners.push(format!("proxy {}", p.name));
                rules.push(r);
            }
        }
        let plan = Plan { rules };
        plan.map_contents().map_err(|e| ApiError::conflict(e.to_string()))?;
        Ok((plan, owners))
    }

    pub(super) fn proxy(&self, name: &str) -> Result<usize, ApiError> {
        self.proxies.iter().position(|p| p.name == name).ok_or_else(|| ApiError::not_found("proxy not found"))
    }
}
