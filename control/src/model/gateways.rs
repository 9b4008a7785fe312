//! Gateways as a fleet, as plain data: their labels (`region=tokyo`) and which gateways a
//! tunnel is served by (all, named ones, or those matching a label selector).

use super::nodes::{Labels, NodeRecord};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most labels on one gateway.
const MAX_LABELS: usize = 16;

fn check_label_part(what: &str, text: &str) -> Result<(), Error> {
    let fine = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match fine {
        true => Ok(()),
        false => Err(Error::invalid(
            "labels",
            format!("{what} {text:?} must be 1-63 letters, digits, '-', '_' or '.'"),
        )),
    }
}

/// `key=value` pairs separated by commas, as people type them (`region=tokyo,tier=edge`).
pub fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, Error> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| Error::invalid("labels", format!("{pair:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            check_label_part("key", key)?;
            check_label_part("value", value)?;
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// Labels from the API: an object of strings, or `"key=value,…"`.
pub fn labels_from_json(value: &Value) -> Result<Labels, Error> {
    let pairs = match value {
        Value::String(text) => parse_pairs(text)?,
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let value = value.as_str().ok_or_else(|| {
                    Error::invalid("labels", format!("{key}: values are strings"))
                })?;
                check_label_part("key", key)?;
                check_label_part("value", value)?;
                Ok((key.clone(), value.to_string()))
            })
            .collect::<Result<_, Error>>()?,
        _ => {
            return Err(Error::invalid(
                "labels",
                "must be an object or \"key=value,…\"",
            ))
        }
    };
    if pairs.len() > MAX_LABELS {
        return Err(Error::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    Ok(pairs.into_iter().collect())
}

/// Which gateways serve a tunnel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayChoice {
    /// Every enabled gateway.
    #[default]
    All,
    /// These gateways, by id.
    Ids(Vec<String>),
    /// Gateways carrying every one of these labels.
    Labels(Vec<(String, String)>),
}

impl GatewayChoice {
    /// From the API: absent, `null` or `"all"` is every gateway; a list is ids; a string
    /// with `=` is a label selector. Named gateways must exist.
    pub fn from_json(value: &Value, nodes: &[NodeRecord]) -> Result<Self, Error> {
        match value {
            Value::Null => Ok(GatewayChoice::All),
            Value::String(text) => Self::from_text(text, nodes),
            Value::Array(items) => {
                let ids: Vec<String> = items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| Error::invalid("gateways", "a list of gateway ids"))
                    })
                    .collect::<Result<_, _>>()?;
                Self::ids(&ids, nodes)
            }
            _ => Err(Error::invalid(
                "gateways",
                "\"all\", a list of gateway ids, or a label selector such as \"region=tokyo\"",
            )),
        }
    }

    /// From a form or a string: `all` or empty, `region=tokyo,…`, or ids separated by commas.
    pub fn from_text(text: &str, nodes: &[NodeRecord]) -> Result<Self, Error> {
        let text = text.trim();
        if text.is_empty() || text == "all" {
            return Ok(GatewayChoice::All);
        }
        if text.contains('=') {
            return Ok(GatewayChoice::Labels(parse_pairs(text)?));
        }
        let ids: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect();
        Self::ids(&ids, nodes)
    }

    /// As a form shows it (what [`Self::from_text`] reads).
    pub fn to_text(&self) -> String {
        match self {
            GatewayChoice::All => "all".into(),
            GatewayChoice::Ids(ids) => ids.join(","),
            GatewayChoice::Labels(_) => self.to_json().as_str().unwrap_or_default().to_string(),
        }
    }

    fn ids(ids: &[String], nodes: &[NodeRecord]) -> Result<Self, Error> {
        if ids.is_empty() {
            return Err(Error::invalid("gateways", "name at least one gateway"));
        }
        for id in ids {
            if !nodes
                .iter()
                .any(|n| n.id == *id && n.kind == kakuremichi_proto::ids::NodeKind::Gateway)
            {
                return Err(Error::invalid("gateways", format!("no gateway {id}")));
            }
        }
        Ok(GatewayChoice::Ids(ids.to_vec()))
    }

    /// Whether `gateway` serves the tunnel.
    pub fn selects(&self, gateway: &NodeRecord) -> bool {
        match self {
            GatewayChoice::All => true,
            GatewayChoice::Ids(ids) => ids.contains(&gateway.id),
            GatewayChoice::Labels(wanted) => wanted
                .iter()
                .all(|(key, value)| gateway.labels.get(key) == Some(value)),
        }
    }

    /// As the API shows it.
    pub fn to_json(&self) -> Value {
        match self {
            GatewayChoice::All => Value::String("all".into()),
            GatewayChoice::Ids(ids) => serde_json::json!(ids),
            GatewayChoice::Labels(pairs) => Value::String(
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_parse_from_text_or_objects_and_refuse_nonsense() {
        let labels = labels_from_json(&json!("region=tokyo, tier=edge")).unwrap();
        assert_eq!(labels.get("region").map(String::as_str), Some("tokyo"));
        assert_eq!(labels_from_json(&json!({"region": "sg"})).unwrap().len(), 1);
        for bad in [
            json!("region"),
            json!("a b=c"),
            json!({"k": 1}),
            json!(7),
            json!("k="),
        ] {
            assert!(labels_from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_choice_selects_by_id_or_by_every_label() {
        let nodes = vec![
            NodeRecord::test_gateway("gw_t", &[("region", "tokyo"), ("tier", "edge")]),
            NodeRecord::test_gateway("gw_s", &[("region", "singapore")]),
        ];
        let by_label = GatewayChoice::from_json(&json!("region=tokyo"), &nodes).unwrap();
        assert!(by_label.selects(&nodes[0]) && !by_label.selects(&nodes[1]));
        let both = GatewayChoice::from_json(&json!("region=tokyo,tier=core"), &nodes).unwrap();
        assert!(!both.selects(&nodes[0]));
        let by_id = GatewayChoice::from_json(&json!(["gw_s"]), &nodes).unwrap();
        assert!(by_id.selects(&nodes[1]) && !by_id.selects(&nodes[0]));
        assert_eq!(
            GatewayChoice::from_json(&json!("all"), &nodes).unwrap(),
            GatewayChoice::All
        );
        assert!(GatewayChoice::from_json(&json!(["gw_missing"]), &nodes).is_err());
        assert!(GatewayChoice::from_json(&json!([]), &nodes).is_err());
        assert_eq!(by_label.to_json(), json!("region=tokyo"));
    }
}
