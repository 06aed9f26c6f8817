//! Datasets as a data owner declares them: a file per dataset (TOML or JSON) with its
//! fields, the services on the exchange it is fetched from and how their answers map
//! to its fields, the purposes it may be used for with the fields each may receive,
//! its requirements, validity, timeout and cache policy.
//!
//! Everything that can be checked before a request comes is checked when the file is
//! read, each mistake with the file, the dataset and the place named: a source that
//! maps a field the dataset does not have, a field no source fills, a purpose naming
//! an unknown field, a path with an unknown placeholder.

use crate::error::{BrokerError, ErrorCode};
use crate::requirement::Requirement;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest dataset definition file read, bytes.
pub const MAX_DEFINITION_LEN: usize = 256 * 1024;
/// Most datasets in one catalogue.
pub const MAX_DATASETS: usize = 10_000;
/// Longest a cached answer may be kept, seconds.
pub const MAX_CACHE_SECONDS: u32 = 300;

/// A dataset: what a consumer asks for by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// The name consumers use (data.altinn.no's `evidenceCodeName`).
    pub name: String,
    /// Its version: fields never change within a version.
    pub version: u32,
    /// The member that owns it, `INSTANCE/CLASS/CODE`.
    pub owner: String,
    /// What it is, for the catalogue.
    pub description: String,
    /// The service contexts it is offered in; none: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_contexts: Vec<String>,
    /// Who the data is about.
    pub subject: SubjectKind,
    /// Its fields, in the order answers list them.
    pub fields: Vec<Field>,
    /// Where they come from.
    pub sources: Vec<Source>,
    /// What it may be used for, and what each use receives.
    pub purposes: Vec<Purpose>,
    /// Who may have it, as data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<Requirement>,
    /// Longest an accreditation for it may be valid, days.
    #[serde(default = "default_validity")]
    pub max_validity_days: u32,
    /// Longest the sources may take together, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// How long an answer may be kept in memory to serve the same request again,
    /// seconds; 0 (the default): never.
    #[serde(default)]
    pub cache_seconds: u32,
    /// Answered later: the consumer polls, or is called back.
    #[serde(default)]
    pub asynchronous: bool,
}

fn default_validity() -> u32 {
    90
}

fn default_timeout() -> u32 {
    35
}

/// Who a dataset is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    /// A person, by person number.
    Person,
    /// An organisation, by organisation number.
    Organisation,
}

impl SubjectKind {
    /// Whether `id` has the shape of this kind's identifier: a person number of 6 to
    /// 12 digits, an organisation number of 9 digits.
    pub fn accepts(self, id: &str) -> bool {
        let digits = id.bytes().all(|b| b.is_ascii_digit());
        match self {
            Self::Person => digits && (6..=12).contains(&id.len()),
            Self::Organisation => digits && id.len() == 9,
        }
    }
}

/// data.altinn.no's value types (`EvidenceValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueType {
    /// `true` or `false`.
    Boolean,
    /// A JSON number.
    Number,
    /// A string.
    String,
    /// An RFC 3339 time.
    DateTime,
    /// A URI.
    Uri,
    /// An amount of money, a number.
    Amount,
    /// Any JSON value, described by the field's schema.
    JsonSchema,
}

/// One field of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Its name (data.altinn.no's `evidenceValueName`).
    pub name: String,
    /// What it holds.
    pub description: String,
    /// Its type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// For `jsonSchema`: the JSON Schema of its values, published with the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// A service on the exchange the dataset is fetched from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Its name within the dataset.
    pub name: String,
    /// The service, `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE`.
    pub service: String,
    /// The path under the service, with `{subject}` and `{param.NAME}` filled in per
    /// request: `/{subject}`.
    pub path: String,
    /// Field name → JSON Pointer (RFC 6901) into the source's JSON answer.
    pub map: BTreeMap<String, String>,
}

/// A purpose (or legal basis) the dataset may be used for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    /// Its id, named in each request.
    pub id: String,
    /// What it is, for the catalogue and the consent page.
    pub description: String,
    /// The law or agreement it rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// The fields it receives; no others leave the broker.
    pub fields: Vec<String>,
}

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct DefinitionError {
    /// The file, and the dataset in it where known.
    pub place: String,
    /// What is wrong.
    pub message: String,
}

fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn text_ok(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.len() <= max && !text.chars().any(char::is_control)
}

/// The placeholders of a source's path: `subject` and `param.NAME`.
pub fn placeholders(path: &str) -> Result<Vec<&str>, String> {
    let mut found = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("path {path:?} has an unclosed {{"))?;
        let name = &after[..close];
        let known = name == "subject"
            || name
                .strip_prefix("param.")
                .is_some_and(|p| !p.is_empty() && name_ok(p));
        if !known {
            return Err(format!(
                "path {path:?} names {{{name}}}: only {{subject}} and {{param.NAME}} are filled in"
            ));
        }
        found.push(name);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("path {path:?} has a }} without {{"));
    }
    Ok(found)
}

impl Dataset {
    /// Checks the definition; each mistake is named.
    pub fn validate(&self) -> Result<(), String> {
        if !name_ok(&self.name) {
            return Err(format!(
                "name {:?}: a letter, then up to 63 letters, digits, - or _",
                self.name
            ));
        }
        if self.version == 0 {
            return Err("version starts at 1".into());
        }
        self.owner
            .parse::<veksel_id::MemberId>()
            .map_err(|e| format!("owner {:?}: {e}", self.owner))?;
        if !text_ok(&self.description, 2000) {
            return Err("description: 1 to 2000 characters, no control characters".into());
        }
        if self.fields.is_empty() || self.fields.len() > 500 {
            return Err("1 to 500 fields".into());
        }
        let mut fields = BTreeSet::new();
        for f in &self.fields {
            if !name_ok(&f.name) {
                return Err(format!("field name {:?} is not a name", f.name));
            }
            if !fields.insert(f.name.as_str()) {
                return Err(format!("field {} is declared twice", f.name));
            }
            if f.schema.is_some() && f.value_type != ValueType::JsonSchema {
                return Err(format!(
                    "field {}: only a jsonSchema field has a schema",
                    f.name
                ));
            }
        }
        let mut filled: BTreeMap<&str, &str> = BTreeMap::new();
        let mut sources = BTreeSet::new();
        if self.sources.is_empty() || self.sources.len() > 20 {
            return Err("1 to 20 sources".into());
        }
        for s in &self.sources {
            if !name_ok(&s.name) || !sources.insert(s.name.as_str()) {
                return Err(format!(
                    "source {:?} is not a name or is declared twice",
                    s.name
                ));
            }
            s.service
                .parse::<veksel_id::ServiceId>()
                .map_err(|e| format!("source {}: service {:?}: {e}", s.name, s.service))?;
            if !s.path.starts_with('/') || s.path.len() > 1000 {
                return Err(format!(
                    "source {}: the path starts with / and has at most 1000 characters",
                    s.name
                ));
            }
            placeholders(&s.path).map_err(|e| format!("source {}: {e}", s.name))?;
            if s.map.is_empty() {
                return Err(format!("source {} fills no field", s.name));
            }
            // A field whose value holds another field's would hand a purpose that
            // names only the first the other as well.
            for (outer, outer_pointer) in &s.map {
                for (inner, inner_pointer) in &s.map {
                    let inside = outer != inner
                        && (outer_pointer.is_empty() && !inner_pointer.is_empty()
                            || inner_pointer
                                .strip_prefix(outer_pointer.as_str())
                                .is_some_and(|rest| rest.starts_with('/')));
                    if inside {
                        return Err(format!(
                            "source {}: {outer} ({outer_pointer:?}) holds {inner} ({inner_pointer:?}); a purpose with {outer} alone would receive {inner} too",
                            s.name
                        ));
                    }
                }
            }
            for (field, pointer) in &s.map {
                if !fields.contains(field.as_str()) {
                    return Err(format!(
                        "source {} fills {field}, which is not a field",
                        s.name
                    ));
                }
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(format!(
                        "source {}: {pointer:?} for {field} is not a JSON Pointer (\"\" or /…)",
                        s.name
                    ));
                }
                if let Some(other) = filled.insert(field, &s.name) {
                    return Err(format!(
                        "field {field} is filled by both {other} and {}",
                        s.name
                    ));
                }
            }
        }
        if let Some(f) = fields.iter().find(|f| !filled.contains_key(*f)) {
            return Err(format!("no source fills field {f}"));
        }
        if self.purposes.is_empty() {
            return Err("at least one purpose: no field leaves the broker without one".into());
        }
        let mut purposes = BTreeSet::new();
        for p in &self.purposes {
            if !name_ok(&p.id) || !purposes.insert(p.id.as_str()) {
                return Err(format!(
                    "purpose {:?} is not a name or is declared twice",
                    p.id
                ));
            }
            if !text_ok(&p.description, 2000) {
                return Err(format!("purpose {}: a description is needed", p.id));
            }
            if p.fields.is_empty() {
                return Err(format!("purpose {} receives no field", p.id));
            }
            if let Some(f) = p.fields.iter().find(|f| !fields.contains(f.as_str())) {
                return Err(format!("purpose {} names {f}, which is not a field", p.id));
            }
        }
        for (i, r) in self.requirements.iter().enumerate() {
            r.validate()
                .map_err(|e| format!("requirement {}: {e}", i + 1))?;
        }
        if !(1..=3650).contains(&self.max_validity_days) {
            return Err("max_validity_days: 1 to 3650".into());
        }
        if !(1..=300).contains(&self.timeout_seconds) {
            return Err("timeout_seconds: 1 to 300".into());
        }
        if self.cache_seconds > MAX_CACHE_SECONDS {
            return Err(format!(
                "cache_seconds: at most {MAX_CACHE_SECONDS} (answers are kept in memory only)"
            ));
        }
        Ok(())
    }

    /// The purpose named `id`.
    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.id == id)
    }

    /// The purpose a request names, or the dataset's only one if it names none;
    /// refused with 1006 and the purposes there are.
    pub fn purpose_for(&self, asked: Option<&str>) -> Result<&Purpose, BrokerError> {
        let known = || {
            self.purposes
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (asked, self.purposes.as_slice()) {
            (Some(id), _) => self.purpose(id).ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::InvalidEvidenceRequest,
                    format!("{} has no purpose {id:?}; it has {}", self.name, known()),
                )
            }),
            (None, [only]) => Ok(only),
            (None, _) => Err(BrokerError::new(
                ErrorCode::InvalidEvidenceRequest,
                format!(
                    "{} has several purposes: name one of {}",
                    self.name,
                    known()
                ),
            )),
        }
    }

    /// Whether it is offered in `service_context` (`None`: no context named).
    pub fn offered_in(&self, service_context: Option<&str>) -> bool {
        self.service_contexts.is_empty()
            || service_context.is_some_and(|c| self.service_contexts.iter().any(|s| s == c))
    }

    /// Reads one definition; `file` names it in errors and decides the format
    /// (`.toml`, else JSON).
    pub fn parse(file: &str, text: &str) -> Result<Self, DefinitionError> {
        let err = |place: String, message: String| DefinitionError { place, message };
        if text.len() > MAX_DEFINITION_LEN {
            return Err(err(
                file.to_owned(),
                format!("larger than {MAX_DEFINITION_LEN} bytes"),
            ));
        }
        let parsed: Self = if file.ends_with(".toml") {
            toml::from_str(text).map_err(|e| err(file.to_owned(), e.to_string()))?
        } else {
            serde_json::from_str(text).map_err(|e| err(file.to_owned(), e.to_string()))?
        };
        parsed
            .validate()
            .map_err(|m| err(format!("{file}, dataset {}", parsed.name), m))?;
        Ok(parsed)
    }
}

/// The datasets a broker offers, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    datasets: BTreeMap<String, Dataset>,
}

impl Catalogue {
    /// A catalogue of `datasets`; two of one name are refused.
    pub fn new(datasets: Vec<Dataset>) -> Result<Self, DefinitionError> {
        let mut by_name = BTreeMap::new();
        if datasets.len() > MAX_DATASETS {
            return Err(DefinitionError {
                place: "catalogue".into(),
                message: format!("more than {MAX_DATASETS} datasets"),
            });
        }
        for d in datasets {
            let name = d.name.clone();
            if by_name.insert(name.clone(), d).is_some() {
                return Err(DefinitionError {
                    place: format!("dataset {name}"),
                    message: "defined twice".into(),
                });
            }
        }
        Ok(Self { datasets: by_name })
    }

    /// Reads every `*.toml` and `*.json` file of `dir` (not its subdirectories).
    pub fn load_dir(dir: &Path) -> Result<Self, DefinitionError> {
        let io = |e: std::io::Error| DefinitionError {
            place: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml" || x == "json"))
            .collect();
        paths.sort();
        let mut datasets = Vec::with_capacity(paths.len());
        for path in paths {
            let file = path.display().to_string();
            let meta = std::fs::metadata(&path).map_err(io)?;
            if meta.len() > MAX_DEFINITION_LEN as u64 {
                return Err(DefinitionError {
                    place: file,
                    message: format!("larger than {MAX_DEFINITION_LEN} bytes"),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| DefinitionError {
                place: file.clone(),
                message: e.to_string(),
            })?;
            datasets.push(Dataset::parse(&file, &text)?);
        }
        Self::new(datasets)
    }

    /// The dataset called `name`, if it is offered in `service_context`.
    pub fn get(&self, name: &str, service_context: Option<&str>) -> Option<&Dataset> {
        self.datasets
            .get(name)
            .filter(|d| d.offered_in(service_context))
    }

    /// Every dataset, by name.
    pub fn all(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A dataset combined from the population and the tax registers.
    pub(crate) const PERSON_INCOME: &str = r#"
name = "person-income"
version = 1
owner = "DEV/GOV/10000002"
description = "A person's name, address and last assessed income"
subject = "person"

[[fields]]
name = "name"
description = "Full name"
type = "string"

[[fields]]
name = "address"
description = "Registered address"
type = "string"

[[fields]]
name = "income"
description = "Assessed income, last year"
type = "amount"

[[fields]]
name = "deceased"
description = "Whether the person has died"
type = "boolean"

[[sources]]
name = "population"
service = "DEV/GOV/10000001/population/persons"
path = "/{subject}"
map = { name = "/name", address = "/address", deceased = "/deceased" }

[[sources]]
name = "tax"
service = "DEV/GOV/10000002/tax/assessments"
path = "/{subject}/{param.year}"
map = { income = "/income" }

[[purposes]]
id = "housing-benefit"
description = "Deciding a housing benefit"
legal_basis = "Housing Benefit Act § 7"
fields = ["name", "income"]

[[purposes]]
id = "address-check"
description = "Checking where a person lives"
fields = ["name", "address"]

[[requirements]]
type = "scope"
scopes = ["veksel:person-income"]
"#;

    pub(crate) fn person_income() -> Dataset {
        Dataset::parse("person-income.toml", PERSON_INCOME).unwrap()
    }

    #[test]
    fn a_combined_dataset_reads_from_toml_and_json_alike() {
        let d = person_income();
        assert_eq!(d.fields.len(), 4);
        assert_eq!(d.max_validity_days, 90);
        assert_eq!(d.cache_seconds, 0);
        assert!(d.offered_in(None) && d.offered_in(Some("eBevis")));
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(Dataset::parse("person-income.json", &json).unwrap(), d);
        assert_eq!(
            d.purpose("housing-benefit").unwrap().fields,
            vec!["name", "income"]
        );
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            (
                "name = \"person-income\"",
                "name = \"9lives\"",
                "name \"9lives\"",
            ),
            ("version = 1", "version = 0", "version starts at 1"),
            (
                "owner = \"DEV/GOV/10000002\"",
                "owner = \"nobody\"",
                "owner \"nobody\"",
            ),
            (
                "map = { income = \"/income\" }",
                "map = { salary = \"/income\" }",
                "fills salary, which is not a field",
            ),
            (
                "map = { income = \"/income\" }",
                "map = { income = \"income\" }",
                "is not a JSON Pointer",
            ),
            (
                "map = { income = \"/income\" }",
                "map = { name = \"/n\", income = \"/income\" }",
                "field name is filled by both population and tax",
            ),
            (
                "path = \"/{subject}/{param.year}\"",
                "path = \"/{subject}/{year}\"",
                "only {subject} and {param.NAME}",
            ),
            (
                "path = \"/{subject}/{param.year}\"",
                "path = \"/{subject}/{param.year\"",
                "unclosed",
            ),
            (
                "fields = [\"name\", \"income\"]",
                "fields = [\"name\", \"salary\"]",
                "purpose housing-benefit names salary",
            ),
            (
                "service = \"DEV/GOV/10000002/tax/assessments\"",
                "service = \"DEV/GOV/10000002\"",
                "source tax: service",
            ),
            (
                "scopes = [\"veksel:person-income\"]",
                "scopes = []",
                "requirement 1",
            ),
        ];
        for (from, to, says) in cases {
            assert!(PERSON_INCOME.contains(from), "{from}");
            let text = PERSON_INCOME.replacen(from, to, 1);
            let e = Dataset::parse("d.toml", &text).unwrap_err();
            assert!(e.to_string().contains(says), "{to}: {e}");
        }
        // A field that holds another's.
        let text = PERSON_INCOME.replace("name = \"/name\"", "name = \"\"");
        let e = Dataset::parse("d.toml", &text).unwrap_err();
        assert!(e.to_string().contains("holds"), "{e}");
        let text = PERSON_INCOME.replace("address = \"/address\"", "address = \"/name/street\"");
        let e = Dataset::parse("d.toml", &text).unwrap_err();
        assert!(
            e.to_string().contains("name (\"/name\") holds address"),
            "{e}"
        );
        // Siblings that only share a prefix of characters are fine.
        let text = PERSON_INCOME.replace("address = \"/address\"", "address = \"/names\"");
        assert!(Dataset::parse("d.toml", &text).is_ok());
        // A field no source fills, an unknown key, a cache kept too long.
        let text = PERSON_INCOME.replace(", deceased = \"/deceased\"", "");
        let e = Dataset::parse("d.toml", &text).unwrap_err();
        assert!(
            e.to_string().contains("no source fills field deceased"),
            "{e}"
        );
        let text = PERSON_INCOME.replace("version = 1", "version = 1\ncolour = \"red\"");
        assert!(
            Dataset::parse("d.toml", &text)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
        let text = PERSON_INCOME.replace("version = 1", "version = 1\ncache_seconds = 3600");
        assert!(
            Dataset::parse("d.toml", &text)
                .unwrap_err()
                .to_string()
                .contains("at most 300")
        );
        let e = Dataset::parse("d.toml", &"x".repeat(MAX_DEFINITION_LEN + 1)).unwrap_err();
        assert!(e.to_string().contains("larger than"));
    }

    #[test]
    fn a_directory_is_a_catalogue_and_a_name_is_defined_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), PERSON_INCOME).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a dataset").unwrap();
        let c = Catalogue::load_dir(dir.path()).unwrap();
        assert!(c.get("person-income", None).is_some());
        assert_eq!(c.all().count(), 1);
        let json = serde_json::to_string(&person_income()).unwrap();
        std::fs::write(dir.path().join("b.json"), json).unwrap();
        let e = Catalogue::load_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
        std::fs::write(dir.path().join("b.json"), "{").unwrap();
        let e = Catalogue::load_dir(dir.path()).unwrap_err();
        assert!(e.place.ends_with("b.json"), "{e}");
        // Offered only in its service contexts.
        let mut d = person_income();
        d.service_contexts = vec!["eBevis".into()];
        let c = Catalogue::new(vec![d]).unwrap();
        assert!(c.get("person-income", Some("eBevis")).is_some());
        assert!(c.get("person-income", Some("Tilda")).is_none());
        assert!(c.get("person-income", None).is_none());
    }

    #[test]
    fn subjects_have_their_kinds_shape() {
        assert!(SubjectKind::Person.accepts("01017012345"));
        assert!(!SubjectKind::Person.accepts("0101701234x"));
        assert!(!SubjectKind::Person.accepts("12345"));
        assert!(SubjectKind::Organisation.accepts("991825827"));
        assert!(!SubjectKind::Organisation.accepts("01017012345"));
    }
}
