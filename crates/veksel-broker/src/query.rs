//! data.altinn.no's `query=`: a JMESPath expression applied to an answer (enveloped
//! or not) before it is signed, so the signature covers what the consumer receives.
//! The jmespath crate parses and evaluates; this module bounds the expression and
//! turns its failures into data.altinn.no's code 1027.

use crate::error::{BrokerError, ErrorCode};

/// Longest expression accepted, characters.
pub const MAX_QUERY_LEN: usize = 1000;

/// `value` transformed by the JMESPath `expression`.
pub fn apply(
    expression: &str,
    value: &serde_json::Value,
) -> Result<serde_json::Value, BrokerError> {
    let invalid = |m: String| BrokerError::new(ErrorCode::InvalidJmesPathExpression, m);
    if expression.chars().count() > MAX_QUERY_LEN {
        return Err(invalid(format!(
            "the query has more than {MAX_QUERY_LEN} characters"
        )));
    }
    let compiled = jmespath::compile(expression).map_err(|e| invalid(format!("query: {e}")))?;
    let data = jmespath::Variable::from_serializable(value)
        .map_err(|e| invalid(format!("the answer cannot be queried: {e}")))?;
    let result = compiled
        .search(data)
        .map_err(|e| invalid(format!("query: {e}")))?;
    serde_json::to_value(&*result).map_err(|e| invalid(format!("query result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_selects_from_the_answer_and_a_bad_one_is_1027() {
        let answer = serde_json::json!({
            "evidenceStatus": {"evidenceCodeName": "person-income"},
            "evidenceValues": [
                {"evidenceValueName": "name", "value": "Aviaja Lynge"},
                {"evidenceValueName": "income", "value": 412000}
            ]
        });
        assert_eq!(
            apply(
                "evidenceValues[?evidenceValueName=='income'].value | [0]",
                &answer
            )
            .unwrap(),
            serde_json::json!(412000)
        );
        assert_eq!(
            apply("evidenceValues[].evidenceValueName", &answer).unwrap(),
            serde_json::json!(["name", "income"])
        );
        assert_eq!(
            apply("nothing.here", &answer).unwrap(),
            serde_json::Value::Null
        );
        for bad in ["evidenceValues[?", "foo(", &"a.".repeat(MAX_QUERY_LEN)] {
            let e = apply(bad, &answer).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidJmesPathExpression, "{bad}");
        }
        // A function given the wrong type is the query's fault too.
        let e = apply("length(`1`)", &answer).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJmesPathExpression);
    }
}
