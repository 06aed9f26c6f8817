//! `POST /v1/authorization` without I/O: data.altinn.no's `AuthorizationRequest` in,
//! an `Accreditation` out (or the refusal), decided from the catalogue, the caller
//! and the subject's consents. The broker stores the accreditation as process state;
//! harvests under it are checked again, live, each time.
//!
//! One addition to data.altinn.no's shapes: each dataset request names its `purpose`
//! (the dataset's fields for that purpose are all that will ever be answered). A
//! dataset with a single purpose may leave it out.

use crate::dataset::Catalogue;
use crate::error::{BrokerError, ErrorCode};
use crate::requirement::{self, Consent, FailureAction, LegalBasis, Party, Request, Rule, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most datasets in one authorization request.
pub const MAX_DATASETS_PER_REQUEST: usize = 50;
/// Most parameters of one dataset request.
pub const MAX_PARAMS: usize = 20;

/// data.altinn.no's `AuthorizationRequest`, the fields the broker reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationRequest {
    /// On whose behalf (default: the authenticated consumer).
    #[serde(default)]
    pub requestor: Option<String>,
    /// About whom.
    pub subject: String,
    /// The datasets.
    pub evidence_requests: Vec<EvidenceRequest>,
    /// Legal bases the dataset requests refer to.
    #[serde(default)]
    pub legal_basis_list: Vec<LegalBasis>,
    /// How long the accreditation should last, RFC 3339.
    #[serde(default)]
    pub valid_to: Option<String>,
    /// A reference the subject sees with a consent request.
    #[serde(default)]
    pub consent_reference: Option<String>,
    /// The consumer's own reference.
    #[serde(default)]
    pub external_reference: Option<String>,
    /// The language of texts for the subject (`nb`, `da`, `en`).
    #[serde(default)]
    pub language_code: Option<String>,
}

/// One dataset asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceRequest {
    /// The dataset.
    pub evidence_code_name: String,
    /// Its parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// The purpose (veksel's addition; may be left out where there is one).
    #[serde(default)]
    pub purpose: Option<String>,
    /// The id of the legal basis in `legalBasisList` it rests on.
    #[serde(default)]
    pub legal_basis_id: Option<String>,
    /// Ask the subject for consent where the dataset needs it.
    #[serde(default)]
    pub request_consent: bool,
}

/// A parameter of a dataset request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// Its name.
    pub evidence_param_name: String,
    /// Its value.
    pub value: String,
}

/// Who calls, as the access token says.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    /// The authenticated consumer.
    pub owner: &'a Party,
    /// The token's scopes.
    pub scopes: &'a [&'a str],
    /// The service context named (data.altinn.no's `X-NADOBE-SERVICECONTEXT`).
    pub service_context: Option<&'a str>,
}

/// Where a dataset of an accreditation stands (data.altinn.no's status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DatasetStatus {
    /// 1: may be harvested.
    Available,
    /// 2: waits for the subject's consent.
    PendingConsent,
    /// 5: an asynchronous dataset being prepared.
    Waiting,
}

impl DatasetStatus {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Available => 1,
            Self::PendingConsent => 2,
            Self::Waiting => 5,
        }
    }
}

/// One dataset of an accreditation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccreditedDataset {
    /// The dataset.
    pub name: String,
    /// Its version when accredited.
    pub version: u32,
    /// The purpose its answers are minimised for.
    pub purpose: String,
    /// Its parameters.
    pub parameters: BTreeMap<String, String>,
    /// Where it stands.
    pub status: DatasetStatus,
    /// How long a consent asked for may last, days (for a pending consent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_period_days: Option<u32>,
}

/// The outcome of an authorization request: data.altinn.no's `Accreditation`, less
/// what the broker adds when it stores it (id, times as text).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accreditation {
    /// The authenticated consumer.
    pub owner: String,
    /// On whose behalf.
    pub requestor: String,
    /// About whom.
    pub subject: String,
    /// The datasets granted or pending.
    pub datasets: Vec<AccreditedDataset>,
    /// Datasets left out, with the reason (`failure_action = "skip"`).
    pub skipped: BTreeMap<String, String>,
    /// Valid until, Unix seconds.
    pub valid_to: i64,
    /// The service context.
    pub service_context: Option<String>,
    /// The consent's reference.
    pub consent_reference: Option<String>,
    /// The consumer's reference.
    pub external_reference: Option<String>,
}

impl Accreditation {
    /// The aggregate status: pending consent if any dataset waits for it, waiting if
    /// any is being prepared, else available.
    pub fn aggregate(&self) -> DatasetStatus {
        let has = |s| self.datasets.iter().any(|d| d.status == s);
        if has(DatasetStatus::PendingConsent) {
            DatasetStatus::PendingConsent
        } else if has(DatasetStatus::Waiting) {
            DatasetStatus::Waiting
        } else {
            DatasetStatus::Available
        }
    }
}

/// `now` plus `days` days, Unix seconds.
fn days_from(now: i64, days: u32) -> i64 {
    now.saturating_add(i64::from(days).saturating_mul(86_400))
}

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, BrokerError> {
    Err(BrokerError::new(code, message))
}

/// Decides an authorization request at `now` (Unix seconds). The node resolves the
/// request's subject and requestor (default: the caller) to parties with their kinds
/// from the registers; `consent` says where the subject's consent to this requestor
/// for a dataset and purpose stands (see [`crate::consent::Consent::standing`]).
pub fn accredit(
    catalogue: &Catalogue,
    req: &AuthorizationRequest,
    caller: &Caller<'_>,
    subject: &Party,
    requestor: &Party,
    consent: &dyn Fn(&str, &str) -> Consent,
    now: i64,
) -> Result<Accreditation, BrokerError> {
    if req.evidence_requests.is_empty() || req.evidence_requests.len() > MAX_DATASETS_PER_REQUEST {
        return refuse(
            ErrorCode::InvalidAuthorizationRequest,
            format!("1 to {MAX_DATASETS_PER_REQUEST} evidenceRequests"),
        );
    }
    let mut datasets = Vec::new();
    let mut skipped = BTreeMap::new();
    // The accreditation ends when the first of its datasets' validity ends.
    let mut until = i64::MAX;
    for er in &req.evidence_requests {
        let name = er.evidence_code_name.as_str();
        if datasets.iter().any(|d: &AccreditedDataset| d.name == name) || skipped.contains_key(name)
        {
            return refuse(
                ErrorCode::InvalidAuthorizationRequest,
                format!("{name} is asked for twice"),
            );
        }
        let dataset = catalogue.get(name, caller.service_context).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownEvidenceCode,
                format!("no dataset {name:?} in this service context"),
            )
        })?;
        let purpose = dataset.purpose_for(er.purpose.as_deref())?.id.as_str();
        if er.parameters.len() > MAX_PARAMS {
            return refuse(
                ErrorCode::InvalidEvidenceRequestParameter,
                format!("at most {MAX_PARAMS} parameters"),
            );
        }
        let parameters: BTreeMap<String, String> = er
            .parameters
            .iter()
            .map(|p| (p.evidence_param_name.clone(), p.value.clone()))
            .collect();
        // The calls the harvest will make, checked now: subject shape, parameters.
        crate::harvest::plan(dataset, purpose, &req.subject, &parameters)?;
        let legal_basis = match &er.legal_basis_id {
            None => None,
            Some(id) => Some(req.legal_basis_list.iter().find(|b| b.id == *id).ok_or_else(|| {
                BrokerError::new(
                    ErrorCode::InvalidLegalBasis,
                    format!("{name} names legal basis {id:?}, which legalBasisList does not have"),
                )
            })?),
        };
        let request = Request {
            service_context: caller.service_context,
            scopes: caller.scopes,
            owner: caller.owner,
            requestor,
            subject,
            legal_basis,
            // Consent is decided below, after every other requirement holds.
            consent: Consent::Given { valid_to: i64::MAX },
            consent_reference: req.consent_reference.as_deref(),
            external_reference: req.external_reference.as_deref(),
        };
        match requirement::evaluate(&dataset.requirements, &request, now)? {
            Verdict::Allowed => {}
            Verdict::Skipped(why) => {
                skipped.insert(name.to_owned(), why);
                continue;
            }
        }
        let consent_requirement = dataset
            .requirements
            .iter()
            .filter(|r| {
                r.service_contexts.is_empty()
                    || caller
                        .service_context
                        .is_some_and(|c| r.service_contexts.iter().any(|s| s == c))
            })
            .find_map(|r| match r.rule {
                Rule::Consent { period_days } => Some((period_days, r.failure_action)),
                _ => None,
            });
        let consent_period = consent_requirement.map(|(days, _)| days);
        let mut dataset_until = days_from(now, dataset.max_validity_days);
        let status = match consent_requirement {
            None => None,
            Some((period_days, failure_action)) => match consent(name, purpose) {
                Consent::Given { valid_to } if valid_to > now => {
                    // The accreditation ends with the consent it rests on.
                    dataset_until = dataset_until.min(valid_to);
                    None
                }
                _ if er.request_consent => {
                    dataset_until = dataset_until.min(days_from(now, period_days));
                    Some(DatasetStatus::PendingConsent)
                }
                standing => {
                    let refusal = match standing {
                        Consent::Given { .. } => BrokerError::new(
                            ErrorCode::ExpiredConsent,
                            format!("the consent for {name} has expired"),
                        ),
                        Consent::Revoked => BrokerError::new(
                            ErrorCode::DeletedConsent,
                            format!("the consent for {name} was revoked"),
                        ),
                        Consent::None => BrokerError::new(
                            ErrorCode::RequiresConsent,
                            format!("{name} needs the subject's consent: set requestConsent"),
                        ),
                    };
                    if failure_action == FailureAction::Skip {
                        skipped.insert(name.to_owned(), refusal.description);
                        continue;
                    }
                    return Err(refusal);
                }
            },
        };
        let status = status.unwrap_or(if dataset.asynchronous {
            DatasetStatus::Waiting
        } else {
            DatasetStatus::Available
        });
        until = until.min(dataset_until);
        datasets.push(AccreditedDataset {
            name: name.to_owned(),
            version: dataset.version,
            purpose: purpose.to_owned(),
            parameters,
            status,
            consent_period_days: (status == DatasetStatus::PendingConsent)
                .then_some(consent_period)
                .flatten(),
        });
    }
    if datasets.is_empty() {
        return refuse(
            ErrorCode::AuthorizationFailed,
            format!(
                "every dataset was left out: {}",
                skipped
                    .iter()
                    .map(|(n, why)| format!("{n} ({why})"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        );
    }
    let valid_to = match &req.valid_to {
        None => until,
        Some(text) => {
            let at =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        BrokerError::new(
                            ErrorCode::InvalidValidToDateTime,
                            format!("validTo {text:?}: {e}"),
                        )
                    })?
                    .unix_timestamp();
            if at <= now || at > until {
                return refuse(
                    ErrorCode::InvalidValidToDateTime,
                    format!(
                        "validTo must be after now and at most {} (the datasets' and consents' validity)",
                        veksel_proto::rfc3339(until.saturating_mul(1000))
                    ),
                );
            }
            at
        }
    };
    Ok(Accreditation {
        owner: caller.owner.id.clone(),
        requestor: requestor.id.clone(),
        subject: req.subject.clone(),
        datasets,
        skipped,
        valid_to,
        service_context: caller.service_context.map(str::to_owned),
        consent_reference: req.consent_reference.clone(),
        external_reference: req.external_reference.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Dataset;
    use crate::dataset::tests::PERSON_INCOME;
    use crate::requirement::PartyKind;

    const NOW: i64 = 1_796_601_600;

    /// The combined dataset, and one of the population register that needs consent
    /// and is left out for an enterprise requestor.
    fn catalogue() -> Catalogue {
        let income = Dataset::parse("a.toml", PERSON_INCOME).unwrap();
        let health = PERSON_INCOME
            .replace("name = \"person-income\"", "name = \"person-health\"")
            .replace(
                "[[requirements]]\ntype = \"scope\"\nscopes = [\"veksel:person-income\"]",
                "[[requirements]]\ntype = \"consent\"\nperiod_days = 30\n\n[[requirements]]\ntype = \"party-type\"\nparty = \"requestor\"\nallowed = [\"public-agency\"]\nfailure_action = \"skip\"",
            );
        let health = Dataset::parse("b.toml", &health).unwrap();
        Catalogue::new(vec![income, health]).unwrap()
    }

    fn party(id: &str, kind: PartyKind) -> Party {
        Party {
            id: id.into(),
            kind,
        }
    }

    fn ask(datasets: &[(&str, &str, bool)]) -> AuthorizationRequest {
        AuthorizationRequest {
            subject: "01017012345".into(),
            evidence_requests: datasets
                .iter()
                .map(|(name, purpose, consent)| EvidenceRequest {
                    evidence_code_name: (*name).into(),
                    parameters: vec![Parameter {
                        evidence_param_name: "year".into(),
                        value: "2025".into(),
                    }],
                    purpose: Some((*purpose).into()),
                    legal_basis_id: None,
                    request_consent: *consent,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn run(
        req: &AuthorizationRequest,
        requestor_kind: PartyKind,
        consent: Consent,
    ) -> Result<Accreditation, BrokerError> {
        let owner = party("DEV/MUN/30000003", PartyKind::PublicAgency);
        let requestor = party("DEV/MUN/30000003", requestor_kind);
        let subject = party("01017012345", PartyKind::Person);
        let caller = Caller {
            owner: &owner,
            scopes: &["veksel:person-income"],
            service_context: None,
        };
        accredit(
            &catalogue(),
            req,
            &caller,
            &subject,
            &requestor,
            &|_, _| consent,
            NOW,
        )
    }

    #[test]
    fn datasets_are_granted_pending_consent_or_skipped() {
        let req = ask(&[
            ("person-income", "housing-benefit", false),
            ("person-health", "housing-benefit", true),
        ]);
        let a = run(&req, PartyKind::PublicAgency, Consent::None).unwrap();
        assert_eq!(a.datasets[0].status, DatasetStatus::Available);
        assert_eq!(a.datasets[1].status, DatasetStatus::PendingConsent);
        assert_eq!(a.datasets[1].consent_period_days, Some(30));
        assert_eq!(a.aggregate(), DatasetStatus::PendingConsent);
        // The consent's period bounds the accreditation.
        assert_eq!(a.valid_to, NOW + 30 * 86_400);
        // With the consent given, all is available.
        let a = run(
            &req,
            PartyKind::PublicAgency,
            Consent::Given { valid_to: NOW + 10 },
        )
        .unwrap();
        assert_eq!(a.aggregate(), DatasetStatus::Available);
        // ... and the accreditation ends with the consent it rests on.
        assert_eq!(a.valid_to, NOW + 10);
        // An enterprise requestor: the health dataset is skipped, the other goes on.
        let a = run(&req, PartyKind::Enterprise, Consent::None).unwrap();
        assert_eq!(a.datasets.len(), 1);
        assert!(
            a.skipped["person-health"].contains("public agency"),
            "{a:?}"
        );
        // Skipped alone: nothing to accredit.
        let only = ask(&[("person-health", "housing-benefit", true)]);
        let e = run(&only, PartyKind::Enterprise, Consent::None).unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthorizationFailed);
    }

    #[test]
    fn a_consent_requirement_that_skips_leaves_the_dataset_out() {
        let skipping = PERSON_INCOME
            .replace("name = \"person-income\"", "name = \"person-health\"")
            .replace(
                "[[requirements]]\ntype = \"scope\"\nscopes = [\"veksel:person-income\"]",
                "[[requirements]]\ntype = \"consent\"\nperiod_days = 30\nfailure_action = \"skip\"",
            );
        let catalogue = Catalogue::new(vec![
            Dataset::parse("a.toml", PERSON_INCOME).unwrap(),
            Dataset::parse("b.toml", &skipping).unwrap(),
        ])
        .unwrap();
        let owner = party("DEV/MUN/30000003", PartyKind::PublicAgency);
        let subject = party("01017012345", PartyKind::Person);
        let caller = Caller {
            owner: &owner,
            scopes: &["veksel:person-income"],
            service_context: None,
        };
        let req = ask(&[
            ("person-income", "housing-benefit", false),
            ("person-health", "housing-benefit", false),
        ]);
        for standing in [
            Consent::None,
            Consent::Revoked,
            Consent::Given { valid_to: NOW },
        ] {
            let a = accredit(
                &catalogue,
                &req,
                &caller,
                &subject,
                &owner,
                &|_, _| standing,
                NOW,
            )
            .unwrap();
            assert_eq!(a.datasets.len(), 1, "{standing:?}");
            assert!(a.skipped.contains_key("person-health"), "{standing:?}");
        }
        // The consent is asked for the dataset and the purpose requested.
        let a = accredit(
            &catalogue,
            &req,
            &caller,
            &subject,
            &owner,
            &|dataset, purpose| {
                if (dataset, purpose) == ("person-health", "housing-benefit") {
                    Consent::Given { valid_to: NOW + 60 }
                } else {
                    Consent::None
                }
            },
            NOW,
        )
        .unwrap();
        assert_eq!(a.datasets.len(), 2);
    }

    #[test]
    fn each_refusal_has_its_code() {
        let code = |req: &AuthorizationRequest, consent: Consent| {
            run(req, PartyKind::PublicAgency, consent).unwrap_err().code
        };
        assert_eq!(
            code(&ask(&[]), Consent::None),
            ErrorCode::InvalidAuthorizationRequest
        );
        assert_eq!(
            code(
                &ask(&[
                    ("person-income", "housing-benefit", false),
                    ("person-income", "address-check", false)
                ]),
                Consent::None
            ),
            ErrorCode::InvalidAuthorizationRequest
        );
        assert_eq!(
            code(&ask(&[("person-wealth", "x", false)]), Consent::None),
            ErrorCode::UnknownEvidenceCode
        );
        assert_eq!(
            code(
                &ask(&[("person-income", "marketing", false)]),
                Consent::None
            ),
            ErrorCode::InvalidEvidenceRequest
        );
        let mut no_purpose = ask(&[("person-income", "x", false)]);
        no_purpose.evidence_requests[0].purpose = None;
        assert_eq!(
            code(&no_purpose, Consent::None),
            ErrorCode::InvalidEvidenceRequest
        );
        let mut bad_subject = ask(&[("person-income", "housing-benefit", false)]);
        bad_subject.subject = "someone".into();
        assert_eq!(code(&bad_subject, Consent::None), ErrorCode::InvalidSubject);
        let mut no_year = ask(&[("person-income", "housing-benefit", false)]);
        no_year.evidence_requests[0].parameters.clear();
        assert_eq!(
            code(&no_year, Consent::None),
            ErrorCode::InvalidEvidenceRequestParameter
        );
        let mut basis = ask(&[("person-income", "housing-benefit", false)]);
        basis.evidence_requests[0].legal_basis_id = Some("7".into());
        assert_eq!(code(&basis, Consent::None), ErrorCode::InvalidLegalBasis);
        // Consent needed and not asked for; expired; revoked.
        let health = ask(&[("person-health", "housing-benefit", false)]);
        assert_eq!(code(&health, Consent::None), ErrorCode::RequiresConsent);
        assert_eq!(
            code(&health, Consent::Given { valid_to: NOW }),
            ErrorCode::ExpiredConsent
        );
        assert_eq!(code(&health, Consent::Revoked), ErrorCode::DeletedConsent);
        // A scope the token lacks.
        let owner = party("DEV/MUN/30000003", PartyKind::PublicAgency);
        let subject = party("01017012345", PartyKind::Person);
        let caller = Caller {
            owner: &owner,
            scopes: &[],
            service_context: None,
        };
        let e = accredit(
            &catalogue(),
            &ask(&[("person-income", "housing-benefit", false)]),
            &caller,
            &subject,
            &owner,
            &|_, _| Consent::None,
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::AuthorizationFailed);
    }

    #[test]
    fn valid_to_is_bounded_by_the_datasets() {
        let mut req = ask(&[("person-income", "housing-benefit", false)]);
        let at = |secs: i64| {
            time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        req.valid_to = Some(at(NOW + 86_400));
        assert_eq!(
            run(&req, PartyKind::PublicAgency, Consent::None)
                .unwrap()
                .valid_to,
            NOW + 86_400
        );
        for bad in [at(NOW - 1), at(NOW + 91 * 86_400), "tomorrow".to_owned()] {
            req.valid_to = Some(bad.clone());
            assert_eq!(
                run(&req, PartyKind::PublicAgency, Consent::None)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidValidToDateTime,
                "{bad}"
            );
        }
        req.valid_to = None;
        assert_eq!(
            run(&req, PartyKind::PublicAgency, Consent::None)
                .unwrap()
                .valid_to,
            NOW + 90 * 86_400
        );
    }

    #[test]
    fn the_request_reads_as_data_altinn_no_writes_it() {
        let req: AuthorizationRequest = serde_json::from_value(serde_json::json!({
            "requestor": "DEV/MUN/30000003",
            "subject": "01017012345",
            "evidenceRequests": [{
                "evidenceCodeName": "person-income",
                "parameters": [{"evidenceParamName": "year", "value": "2025"}],
                "purpose": "housing-benefit",
                "legalBasisId": "1",
                "requestConsent": false
            }],
            "legalBasisList": [{"id": "1", "type": "law", "content": "Housing Benefit Act § 7"}],
            "validTo": "2027-01-01T00:00:00Z",
            "externalReference": "17/2026",
            "consentReceiptRedirectUrl": "https://example.invalid/done"
        }))
        .unwrap();
        assert_eq!(
            req.evidence_requests[0].legal_basis_id.as_deref(),
            Some("1")
        );
        assert_eq!(req.legal_basis_list[0].kind, "law");
        let a = run(&req, PartyKind::PublicAgency, Consent::None).unwrap();
        assert_eq!(a.external_reference.as_deref(), Some("17/2026"));
        assert_eq!(
            serde_json::to_value(&a.datasets[0]).unwrap()["parameters"],
            serde_json::json!({"year": "2025"})
        );
    }
}
