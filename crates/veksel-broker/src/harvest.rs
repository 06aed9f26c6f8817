//! From a request to an answer: which sources to call (only those that fill a field
//! of the purpose), the path of each call, and the answer assembled from the
//! sources' JSON in data.altinn.no's `Evidence` envelope, with the purpose's fields
//! only. A field outside the purpose is never asked for and never answered; a value
//! of the wrong type is the source's fault (3003), not passed on.

use crate::dataset::{Dataset, Source, ValueType};
use crate::error::{BrokerError, ErrorCode};
use serde::Serialize;
use std::collections::BTreeMap;

/// Longest parameter value, characters.
pub const MAX_PARAM_LEN: usize = 200;

/// A call to a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Call<'d> {
    /// The source.
    pub source: &'d Source,
    /// The path under its service, placeholders filled in and percent-encoded.
    pub path: String,
}

/// The calls a request for `purpose` of `dataset` about `subject` needs, with the
/// request's parameters: only the sources that fill one of the purpose's fields.
pub fn plan<'d>(
    dataset: &'d Dataset,
    purpose: &str,
    subject: &str,
    params: &BTreeMap<String, String>,
) -> Result<Vec<Call<'d>>, BrokerError> {
    let purpose = dataset.purpose_for(Some(purpose))?;
    if !dataset.subject.accepts(subject) {
        return Err(BrokerError::new(
            ErrorCode::InvalidSubject,
            format!(
                "{} is about a {:?}: the subject is not such a number",
                dataset.name, dataset.subject
            ),
        ));
    }
    let mut calls = Vec::new();
    for source in &dataset.sources {
        if !source.map.keys().any(|f| purpose.fields.contains(f)) {
            continue;
        }
        calls.push(Call {
            source,
            path: fill(&source.path, subject, params)?,
        });
    }
    Ok(calls)
}

/// A path with its placeholders filled in; every value percent-encoded as a path
/// segment, so no value can add a segment or a query.
fn fill(
    template: &str,
    subject: &str,
    params: &BTreeMap<String, String>,
) -> Result<String, BrokerError> {
    let names = crate::dataset::placeholders(template)
        .map_err(|e| BrokerError::new(ErrorCode::InternalServerError, e))?;
    let mut path = template.to_owned();
    for name in names {
        let value = match name.strip_prefix("param.") {
            None => subject,
            Some(p) => params.get(p).map(String::as_str).ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::InvalidEvidenceRequestParameter,
                    format!("the parameter {p} is missing"),
                )
            })?,
        };
        if value.is_empty()
            || value.chars().count() > MAX_PARAM_LEN
            || value.chars().any(char::is_control)
        {
            return Err(BrokerError::new(
                ErrorCode::InvalidEvidenceRequestParameter,
                format!("{name}: 1 to {MAX_PARAM_LEN} characters, no control characters"),
            ));
        }
        let encoded: String = percent_encoding::utf8_percent_encode(value, SEGMENT).collect();
        path = path.replacen(&format!("{{{name}}}"), &encoded, 1);
    }
    Ok(path)
}

/// What is encoded in a path segment: everything but RFC 3986's unreserved
/// characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// data.altinn.no's `Evidence` envelope.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The dataset's status.
    pub evidence_status: EvidenceStatus,
    /// The values.
    pub evidence_values: Vec<EvidenceValue>,
}

/// The status of a dataset in an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceStatus {
    /// The dataset.
    pub evidence_code_name: String,
    /// Its status.
    pub status: StatusCode,
    /// From when, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// Until when, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
}

/// data.altinn.no's status codes (`StatusCodeIds`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCode {
    /// 1 available, 2 pending consent, 3 denied, 4 expired, 5 waiting, 7 unavailable.
    pub code: u8,
    /// Its name.
    pub description: String,
    /// For 5: when to ask again, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}

impl StatusCode {
    /// 1, available.
    pub fn available() -> Self {
        Self {
            code: 1,
            description: "Available".into(),
            retry_at: None,
        }
    }
}

/// One value of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceValue {
    /// The field.
    pub evidence_value_name: String,
    /// Its type.
    pub value_type: ValueType,
    /// The value (`null` when the source has none).
    pub value: serde_json::Value,
    /// The service it came from.
    pub source: String,
    /// When it was fetched, RFC 3339.
    pub timestamp: String,
    /// For `jsonSchema`: the schema, as text (data.altinn.no's spelling).
    #[serde(
        rename = "jsonSchemaDefintion",
        skip_serializing_if = "Option::is_none"
    )]
    pub json_schema_definition: Option<String>,
}

/// Whether `v` is a value of type `t` (`null` always is: the source has none).
fn of_type(t: ValueType, v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (t, v) {
        (_, V::Null) => true,
        (ValueType::Boolean, V::Bool(_)) => true,
        (ValueType::Number | ValueType::Amount, V::Number(_)) => true,
        (ValueType::String, V::String(_)) => true,
        (ValueType::DateTime, V::String(s)) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }
        (ValueType::Uri, V::String(s)) => s.split_once(':').is_some_and(|(scheme, _)| {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }),
        (ValueType::JsonSchema, _) => true,
        _ => false,
    }
}

/// The answer for `purpose` of `dataset` from the sources' JSON answers (by source
/// name), fetched at `at` (RFC 3339): the purpose's fields in the dataset's order,
/// nothing else.
pub fn assemble(
    dataset: &Dataset,
    purpose: &str,
    answers: &BTreeMap<String, serde_json::Value>,
    at: &str,
) -> Result<Evidence, BrokerError> {
    let purpose = dataset.purpose_for(Some(purpose))?;
    let mut values = Vec::with_capacity(purpose.fields.len());
    for field in dataset
        .fields
        .iter()
        .filter(|f| purpose.fields.contains(&f.name))
    {
        let Some((source, pointer)) = dataset
            .sources
            .iter()
            .find_map(|s| s.map.get(&field.name).map(|p| (s, p)))
        else {
            return Err(BrokerError::new(
                ErrorCode::InternalServerError,
                format!("no source fills {}", field.name),
            ));
        };
        let answer = answers.get(&source.name).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::InternalServerError,
                format!("source {} was not called", source.name),
            )
        })?;
        let value = answer
            .pointer(pointer)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if !of_type(field.value_type, &value) {
            return Err(BrokerError::new(
                ErrorCode::SourcePermanentServer,
                format!(
                    "source {} answered a {} for {}, which is a {:?}",
                    source.name,
                    json_kind(&value),
                    field.name,
                    field.value_type
                ),
            ));
        }
        values.push(EvidenceValue {
            evidence_value_name: field.name.clone(),
            value_type: field.value_type,
            value,
            source: source.service.clone(),
            timestamp: at.to_owned(),
            json_schema_definition: field.schema.as_ref().map(ToString::to_string),
        });
    }
    Ok(Evidence {
        evidence_status: EvidenceStatus {
            evidence_code_name: dataset.name.clone(),
            status: StatusCode::available(),
            valid_from: None,
            valid_to: None,
        },
        evidence_values: values,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

impl Evidence {
    /// The answer without the envelope (`envelope=false`): field name → value.
    pub fn unenveloped(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.evidence_values
                .iter()
                .map(|v| (v.evidence_value_name.clone(), v.value.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::tests::person_income;

    fn params(year: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("year".to_owned(), year.to_owned())])
    }

    fn answers() -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            (
                "population".to_owned(),
                serde_json::json!({
                    "name": "Aviaja Lynge", "address": "Aqqusinersuaq 3, Nuuk",
                    "deceased": false, "church": "member"
                }),
            ),
            (
                "tax".to_owned(),
                serde_json::json!({"income": 412000, "debt": 3}),
            ),
        ])
    }

    #[test]
    fn only_the_sources_of_the_purposes_fields_are_called() {
        let d = person_income();
        let calls = plan(&d, "housing-benefit", "01017012345", &params("2025")).unwrap();
        let paths: Vec<_> = calls
            .iter()
            .map(|c| (c.source.name.as_str(), c.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            vec![("population", "/01017012345"), ("tax", "/01017012345/2025")]
        );
        // Checking an address needs the population register only: the tax register
        // is not asked, and its parameter not needed.
        let calls = plan(&d, "address-check", "01017012345", &BTreeMap::new()).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].source.name, "population");
    }

    #[test]
    fn requests_the_dataset_cannot_serve_are_refused_with_their_codes() {
        let d = person_income();
        let code = |purpose: &str, subject: &str, p: &BTreeMap<String, String>| {
            plan(&d, purpose, subject, p).unwrap_err().code
        };
        assert_eq!(
            code("marketing", "01017012345", &params("2025")),
            ErrorCode::InvalidEvidenceRequest
        );
        assert_eq!(
            code("housing-benefit", "991825827x", &params("2025")),
            ErrorCode::InvalidSubject
        );
        assert_eq!(
            code("housing-benefit", "01017012345", &BTreeMap::new()),
            ErrorCode::InvalidEvidenceRequestParameter
        );
        assert_eq!(
            code(
                "housing-benefit",
                "01017012345",
                &params(&"9".repeat(MAX_PARAM_LEN + 1))
            ),
            ErrorCode::InvalidEvidenceRequestParameter
        );
        // A parameter cannot add a segment or a query to the source's path.
        let calls = plan(
            &d,
            "housing-benefit",
            "01017012345",
            &params("../2025?all=1"),
        )
        .unwrap();
        assert_eq!(calls[1].path, "/01017012345/..%2F2025%3Fall%3D1");
    }

    #[test]
    fn a_field_outside_the_purpose_never_leaves_the_broker() {
        let d = person_income();
        let e = assemble(&d, "housing-benefit", &answers(), "2026-12-07T12:00:00Z").unwrap();
        let names: Vec<_> = e
            .evidence_values
            .iter()
            .map(|v| v.evidence_value_name.as_str())
            .collect();
        assert_eq!(names, vec!["name", "income"]);
        let text = serde_json::to_string(&e).unwrap();
        for secret in ["Aqqusinersuaq", "deceased", "church", "debt", "member"] {
            assert!(!text.contains(secret), "{secret} left the broker: {text}");
        }
        assert_eq!(
            e.unenveloped(),
            serde_json::json!({"name": "Aviaja Lynge", "income": 412000})
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["evidenceStatus"]["evidenceCodeName"], "person-income");
        assert_eq!(v["evidenceStatus"]["status"]["code"], 1);
        assert_eq!(v["evidenceValues"][1]["valueType"], "amount");
        assert_eq!(
            v["evidenceValues"][1]["source"],
            "DEV/GOV/10000002/tax/assessments"
        );
    }

    #[test]
    fn a_source_answering_the_wrong_type_is_its_fault() {
        let d = person_income();
        let mut a = answers();
        a.insert("tax".into(), serde_json::json!({"income": "a lot"}));
        let e = assemble(&d, "housing-benefit", &a, "2026-12-07T12:00:00Z").unwrap_err();
        assert_eq!(e.code, ErrorCode::SourcePermanentServer);
        assert!(
            e.description
                .contains("a string for income, which is a Amount"),
            "{e}"
        );
        // A value the source does not have is null, not an error.
        a.insert("tax".into(), serde_json::json!({}));
        let e = assemble(&d, "housing-benefit", &a, "2026-12-07T12:00:00Z").unwrap();
        assert_eq!(e.evidence_values[1].value, serde_json::Value::Null);
        // A source the broker did not call cannot be assembled from.
        a.remove("tax");
        let e = assemble(&d, "housing-benefit", &a, "2026-12-07T12:00:00Z").unwrap_err();
        assert_eq!(e.code, ErrorCode::InternalServerError);
    }

    #[test]
    fn values_are_checked_against_their_types() {
        use serde_json::json;
        let cases = [
            (ValueType::Boolean, json!(true), true),
            (ValueType::Boolean, json!("true"), false),
            (ValueType::Amount, json!(12.5), true),
            (ValueType::DateTime, json!("2026-12-07T12:00:00Z"), true),
            (ValueType::DateTime, json!("7 December"), false),
            (ValueType::Uri, json!("https://example.org/x"), true),
            (ValueType::Uri, json!("not a uri"), false),
            (ValueType::String, json!(3), false),
            (ValueType::JsonSchema, json!({"a": [1]}), true),
            (ValueType::Number, json!(null), true),
        ];
        for (t, v, ok) in cases {
            assert_eq!(of_type(t, &v), ok, "{t:?} {v}");
        }
    }
}
