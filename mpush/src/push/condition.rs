//! Broadcast condition expressions (being written by a helper; skeleton).

/// The variables a condition sees.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionVars<'a> {
    /// `userId`.
    pub user_id: Option<&'a str>,
    /// `tags`.
    pub tags: Option<&'a str>,
    /// `clientVersion`.
    pub client_version: Option<&'a str>,
    /// `osName`.
    pub os_name: Option<&'a str>,
    /// `osVersion`.
    pub os_version: Option<&'a str>,
}

/// A compile error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(pub String);

/// A compiled condition.
#[derive(Debug)]
pub struct Condition;

impl Condition {
    /// Compiles an expression.
    pub fn compile(src: &str) -> Result<Self, ConditionError> {
        Err(ConditionError(format!(
            "condition expressions are not available yet: {src}"
        )))
    }

    /// Evaluates against a session.
    pub fn matches(&self, _vars: &SessionVars<'_>) -> bool {
        false
    }
}
