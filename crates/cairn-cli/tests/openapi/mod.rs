//! A validator for the subset of OpenAPI 3.0 schemas that Flink's generated
//! REST specification uses: `type`, `format` (int32/int64), `properties`,
//! `required`, `items`, `additionalProperties`, `enum`, `pattern` (the one
//! pattern Flink's ids use), `$ref`, `allOf`, `oneOf` and `discriminator`.
//!
//! Two conventions of Flink's, not written in the generated file, apply:
//! a property whose value is JSON `null` counts as absent (Flink's Jackson
//! writes `null` for unset optional fields, and the file marks none
//! `nullable`), and `oneOf` alternatives are checked as "at least one
//! matches" (the generator's alternatives share no required field, so an
//! object always matches several). In strict mode an object property that
//! the schema does not name is an error too: Flink's Java client rejects
//! unknown fields.
#![allow(dead_code)]

use serde_json::Value;
use yaml_serde::Value as Yaml;

pub struct Spec {
    schemas: yaml_serde::Mapping,
}

impl Spec {
    pub fn load(text: &str) -> Spec {
        let doc: Yaml = yaml_serde::from_str(text).expect("the OpenAPI excerpt parses");
        let schemas = doc["components"]["schemas"]
            .as_mapping()
            .expect("components.schemas")
            .clone();
        Spec { schemas }
    }

    fn schema(&self, name: &str) -> &Yaml {
        self.schemas
            .get(Yaml::String(name.to_string()))
            .unwrap_or_else(|| panic!("the excerpt has no schema {name}"))
    }

    /// Validates `value` against schema `name`; the errors, each with its
    /// JSON path.
    pub fn validate(&self, name: &str, value: &Value, strict: bool) -> Vec<String> {
        let mut errors = Vec::new();
        let s = self.schema(name).clone();
        self.check(&s, value, "$", strict, true, &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, s: &'a Yaml) -> &'a Yaml {
        match s.get("$ref").and_then(Yaml::as_str) {
            Some(r) => self.schema(r.trim_start_matches("#/components/schemas/")),
            None => s,
        }
    }

    /// The property names a schema allows (through `allOf` too).
    fn names(&self, s: &Yaml, out: &mut Vec<String>) {
        let s = self.resolve(s);
        if let Some(p) = s.get("properties").and_then(Yaml::as_mapping) {
            out.extend(p.keys().filter_map(|k| k.as_str().map(String::from)));
        }
        for sub in s.get("allOf").and_then(Yaml::as_sequence).into_iter().flatten() {
            self.names(sub, out);
        }
    }

    fn check(&self, s: &Yaml, v: &Value, at: &str, strict: bool, dispatch: bool, errors: &mut Vec<String>) {
        let s = self.resolve(s).clone();
        // A discriminated base: check the mapped schema instead.
        if dispatch {
            if let Some(d) = s.get("discriminator") {
                let prop = d["propertyName"].as_str().unwrap_or_default();
                match v.get(prop).and_then(Value::as_str) {
                    Some(tag) => match d["mapping"].get(tag).and_then(Yaml::as_str) {
                        Some(target) => {
                            let t = self.schema(target.trim_start_matches("#/components/schemas/")).clone();
                            return self.check(&t, v, at, strict, false, errors);
                        }
                        None => {
                            errors.push(format!("{at}.{prop}: '{tag}' is not one of the discriminator's values"));
                            return;
                        }
                    },
                    None => {
                        errors.push(format!("{at}: missing discriminator property '{prop}'"));
                        return;
                    }
                }
            }
        }
        if let Some(all) = s.get("allOf").and_then(Yaml::as_sequence) {
            for sub in all {
                // Strictness is judged on the union of all parts below.
                self.check(sub, v, at, false, false, errors);
            }
            if strict {
                self.unknown_fields(&s, v, at, errors);
            }
            if s.get("properties").is_none() {
                return;
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Yaml::as_sequence) {
            let ok = one.iter().any(|sub| {
                let mut e = Vec::new();
                self.check(sub, v, at, strict, true, &mut e);
                e.is_empty()
            });
            if !ok {
                errors.push(format!("{at}: matches none of the oneOf alternatives: {v}"));
            }
            return;
        }
        if let Some(values) = s.get("enum").and_then(Yaml::as_sequence) {
            let ok = values.iter().any(|e| e.as_str().is_some_and(|e| v.as_str() == Some(e)));
            if !ok {
                errors.push(format!("{at}: {v} is not one of {values:?}"));
            }
        }
        match s.get("type").and_then(Yaml::as_str) {
            Some("object") => {
                let Some(obj) = v.as_object() else {
                    errors.push(format!("{at}: expected an object, got {v}"));
                    return;
                };
                for r in s.get("required").and_then(Yaml::as_sequence).into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    if obj.get(r).is_none_or(Value::is_null) {
                        errors.push(format!("{at}: required property '{r}' is missing"));
                    }
                }
                let props = s.get("properties").and_then(Yaml::as_mapping);
                for (k, val) in obj {
                    if val.is_null() {
                        continue;
                    }
                    let here = format!("{at}.{k}");
                    match props.and_then(|p| p.get(Yaml::String(k.clone()))) {
                        Some(ps) => self.check(ps, val, &here, strict, true, errors),
                        None => match s.get("additionalProperties") {
                            Some(ap) if ap.is_mapping() => self.check(ap, val, &here, strict, true, errors),
                            _ if strict && s.get("allOf").is_none() && props.is_some() => errors.push(format!(
                                "{here}: not a property of the schema (Flink's client rejects it)"
                            )),
                            _ => {}
                        },
                    }
                }
            }
            Some("array") => {
                let Some(items) = v.as_array() else {
                    errors.push(format!("{at}: expected an array, got {v}"));
                    return;
                };
                if let Some(is) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(is, item, &format!("{at}[{i}]"), strict, true, errors);
                    }
                }
            }
            Some("string") => match v.as_str() {
                None => errors.push(format!("{at}: expected a string, got {v}")),
                Some(text) => {
                    if let Some(p) = s.get("pattern").and_then(Yaml::as_str) {
                        assert_eq!(p, "[0-9a-f]{32}", "the validator knows only Flink's id pattern");
                        if !(text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                        {
                            errors.push(format!("{at}: '{text}' does not match {p}"));
                        }
                    }
                }
            },
            Some("integer") => match v.as_f64() {
                Some(n) if n.fract() == 0.0 && (v.is_i64() || v.is_u64()) => {
                    if s.get("format").and_then(Yaml::as_str) == Some("int32")
                        && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&n)
                    {
                        errors.push(format!("{at}: {v} does not fit int32"));
                    }
                    if s.get("format").and_then(Yaml::as_str) == Some("int64") && v.as_i64().is_none() {
                        errors.push(format!("{at}: {v} does not fit int64"));
                    }
                }
                _ => errors.push(format!("{at}: expected an integer, got {v}")),
            },
            Some("number") if !v.is_number() => errors.push(format!("{at}: expected a number, got {v}")),
            Some("boolean") if !v.is_boolean() => errors.push(format!("{at}: expected true or false, got {v}")),
            _ => {}
        }
    }

    fn unknown_fields(&self, s: &Yaml, v: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(obj) = v.as_object() else { return };
        let mut names = Vec::new();
        self.names(s, &mut names);
        for k in obj.keys() {
            if !names.contains(k) {
                errors.push(format!(
                    "{at}.{k}: not a property of the schema (Flink's client rejects it)"
                ));
            }
        }
    }
}

/// The validator rejects what it must (it is tested, like any code).
pub fn self_test(spec: &Spec) {
    use serde_json::json;
    assert!(spec
        .validate("JobStatusInfo", &json!({"status": "RUNNING"}), true)
        .is_empty());
    assert!(!spec
        .validate("JobStatusInfo", &json!({"status": "RUNING"}), true)
        .is_empty());
    assert!(!spec
        .validate("JobStatusInfo", &json!({"status": "RUNNING", "x": 1}), true)
        .is_empty());
    assert!(spec
        .validate("JobStatusInfo", &json!({"status": "RUNNING", "x": 1}), false)
        .is_empty());
    assert!(!spec
        .validate("TriggerResponse", &json!({"request-id": "xyz"}), true)
        .is_empty());
    assert!(!spec.validate("Counts", &json!({"in_progress": 1.5}), true).is_empty());
    assert!(!spec
        .validate("Counts", &json!({"in_progress": 3_000_000_000u64}), true)
        .is_empty());
    assert!(!spec.validate("QueueStatus", &json!({}), true).is_empty());
    assert!(!spec
        .validate("MultipleJobsDetails", &json!({"jobs": {}}), true)
        .is_empty());
    let completed =
        json!({"className": "completed", "id": 1, "status": "COMPLETED", "external_path": "/x", "discarded": false});
    assert!(spec.validate("CheckpointStatistics", &completed, true).is_empty());
    let bad = json!({"className": "completed", "id": "one", "external_path": 3});
    assert!(spec.validate("CheckpointStatistics", &bad, true).len() >= 2);
    assert!(!spec
        .validate("CheckpointStatistics", &json!({"className": "weird"}), true)
        .is_empty());
    let extra = json!({"className": "completed", "id": 1, "sync_duration": 3});
    assert!(!spec.validate("CheckpointStatistics", &extra, true).is_empty());
}
