//! Authentication and the little authorization we simulate.
//!
//! Static bearer tokens (`--token`, full access; `--read-only-token`, 403 on writes;
//! `--namespaced-token`, 403 on namespaces, as for a user bound by a Role in its namespace and a
//! ClusterRole for nodes; `--no-events-token`, 403 on Events, as for a Role that omits them) are
//! checked here. With no tokens and no EKS cluster configured every request is anonymous and
//! allowed. EKS tokens (`k8s-aws-v1.` + a presigned STS GetCallerIdentity URL) go to
//! [`eks::EksVerifier`] when `--eks-cluster-name` is given.

pub mod eks;
pub mod sts;

use std::collections::HashMap;
use std::sync::RwLock;

use crate::error::ApiError;
use crate::resources::Kind;

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials, and none are required.
    Anonymous,
    /// A known user.
    User {
        /// The user name, as it appears in 403 messages.
        name: String,
        /// Whether writes are forbidden.
        read_only: bool,
        /// Whether namespaces themselves are forbidden (every verb).
        namespaced: bool,
        /// Whether Events are forbidden (every verb).
        events_forbidden: bool,
    },
}

/// Checks `Authorization` headers.
#[derive(Debug, Default)]
pub struct Authenticator {
    // Behind a lock so that a test can rotate them (`PUT /_sim/tokens`).
    tokens: RwLock<HashMap<String, Identity>>,
    eks: Option<eks::EksVerifier>,
}

impl Authenticator {
    /// An authenticator over static tokens and, optionally, EKS token review.
    pub fn new(
        tokens: &[String],
        read_only_tokens: &[String],
        eks: Option<eks::EksVerifier>,
    ) -> Authenticator {
        let mut map = HashMap::new();
        for (index, token) in tokens.iter().enumerate() {
            map.insert(
                token.clone(),
                Identity::User {
                    name: format!("kube-sim-user-{}", index + 1),
                    read_only: false,
                    namespaced: false,
                    events_forbidden: false,
                },
            );
        }
        for (index, token) in read_only_tokens.iter().enumerate() {
            map.insert(
                token.clone(),
                Identity::User {
                    name: format!("kube-sim-reader-{}", index + 1),
                    read_only: true,
                    namespaced: false,
                    events_forbidden: false,
                },
            );
        }
        Authenticator { tokens: RwLock::new(map), eks }
    }

    /// Replaces every static token with `tokens`, each with full access, as when a cluster's
    /// service-account tokens rotate: the old ones are refused from now on.
    pub fn replace_tokens(&self, tokens: &[String]) {
        let replacement = Authenticator::new(tokens, &[], None);
        let new_tokens = replacement.tokens.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        *self.tokens.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = new_tokens;
    }

    fn insert(&mut self, token: &str, identity: Identity) {
        self.tokens
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(token.to_owned(), identity);
    }

    /// Adds tokens with full access to everything but namespaces.
    pub fn with_namespaced_tokens(mut self, tokens: &[String]) -> Authenticator {
        for (index, token) in tokens.iter().enumerate() {
            self.insert(
                token,
                Identity::User {
                    name: format!("kube-sim-namespaced-{}", index + 1),
                    read_only: false,
                    namespaced: true,
                    events_forbidden: false,
                },
            );
        }
        self
    }

    /// Adds tokens with full access to everything but Events.
    pub fn with_no_events_tokens(mut self, tokens: &[String]) -> Authenticator {
        for (index, token) in tokens.iter().enumerate() {
            self.insert(
                token,
                Identity::User {
                    name: format!("kube-sim-no-events-{}", index + 1),
                    read_only: false,
                    namespaced: false,
                    events_forbidden: true,
                },
            );
        }
        self
    }

    /// Whether any credentials are required.
    pub fn required(&self) -> bool {
        !self.tokens.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty() || self.eks.is_some()
    }

    /// Authenticates a request from its `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        if !self.required() {
            return Ok(Identity::Anonymous);
        }
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let known = self.tokens.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(token).cloned();
        if let Some(identity) = known {
            return Ok(identity);
        }
        let Some(verifier) = self.eks.as_ref().filter(|_| token.starts_with(eks::TOKEN_PREFIX)) else {
            return Err(ApiError::Unauthorized);
        };
        let rejected = |error: &dyn std::fmt::Display| {
            tracing::info!(%error, "EKS token rejected");
            ApiError::Unauthorized
        };
        match verifier.verify(token, jiff::Timestamp::now()) {
            Ok(arn) => {
                Ok(Identity::User { name: arn, read_only: false, namespaced: false, events_forbidden: false })
            }
            // Every local check passed but the key is not ours: STS decides, as in EKS.
            Err(eks::EksTokenError::UnknownKey(_)) if verifier.sts.is_some() => {
                let (path_and_query, expires) =
                    eks::replay_target(token).map_err(|error| rejected(&error))?;
                let sts = verifier.sts.as_ref().ok_or(ApiError::Unauthorized)?;
                sts.identify(&path_and_query, &verifier.cluster_name, expires)
                    .await
                    .map(|arn| Identity::User {
                        name: arn,
                        read_only: false,
                        namespaced: false,
                        events_forbidden: false,
                    })
                    .map_err(|error| rejected(&error))
            }
            Err(error) => Err(rejected(&error)),
        }
    }
}

/// Refuses writes to read-only users with the API server's 403 message.
pub fn authorize(
    identity: &Identity,
    verb: &str,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let Identity::User { name: user, read_only, namespaced, events_forbidden } = identity else {
        return Ok(());
    };
    let denied = (*namespaced && kind == Kind::Namespace)
        || (*events_forbidden && kind == Kind::Event)
        || (*read_only && !matches!(verb, "get" | "list" | "watch"));
    if !denied {
        return Ok(());
    }
    let info = kind.info();
    let target =
        if name.is_empty() { info.plural.to_string() } else { format!("{} \"{name}\"", info.plural) };
    let scope = match namespace {
        Some(namespace) if info.namespaced => format!(" in the namespace \"{namespace}\""),
        _ => " at the cluster scope".to_string(),
    };
    Err(ApiError::Forbidden {
        kind: Some(kind),
        name: name.to_string(),
        message: format!(
            "{target} is forbidden: User \"{user}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
            info.plural, info.group
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_checked_only_when_configured() {
        let open = Authenticator::new(&[], &[], None);
        assert_eq!(open.authenticate(None).await.unwrap(), Identity::Anonymous);
        let closed = Authenticator::new(&["secret".into()], &["reader".into()], None);
        assert!(matches!(closed.authenticate(None).await, Err(ApiError::Unauthorized)));
        assert!(matches!(closed.authenticate(Some("Bearer wrong")).await, Err(ApiError::Unauthorized)));
        assert!(matches!(closed.authenticate(Some("Basic c2VjcmV0")).await, Err(ApiError::Unauthorized)));
        let user = closed.authenticate(Some("Bearer secret")).await.unwrap();
        assert!(authorize(&user, "create", Kind::Pod, Some("default"), "").is_ok());
        let reader = closed.authenticate(Some("Bearer reader")).await.unwrap();
        assert!(authorize(&reader, "list", Kind::Pod, Some("default"), "").is_ok());
        let denied = authorize(&reader, "delete", Kind::Pod, Some("default"), "web").unwrap_err();
        assert_eq!(denied.code(), 403);
        assert_eq!(
            denied.to_string(),
            "pods \"web\" is forbidden: User \"kube-sim-reader-1\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let namespaced = Authenticator::new(&[], &[], None).with_namespaced_tokens(&["ns".into()]);
        let user = namespaced.authenticate(Some("Bearer ns")).await.unwrap();
        assert!(authorize(&user, "create", Kind::Pod, Some("default"), "").is_ok());
        let denied = authorize(&user, "get", Kind::Namespace, None, "default").unwrap_err();
        assert_eq!(
            denied.to_string(),
            "namespaces \"default\" is forbidden: User \"kube-sim-namespaced-1\" cannot get resource \"namespaces\" in API group \"\" at the cluster scope"
        );
        let no_events = Authenticator::new(&[], &[], None).with_no_events_tokens(&["ne".into()]);
        let user = no_events.authenticate(Some("Bearer ne")).await.unwrap();
        assert!(authorize(&user, "create", Kind::Pod, Some("default"), "").is_ok());
        let denied = authorize(&user, "list", Kind::Event, Some("default"), "").unwrap_err();
        assert_eq!(denied.code(), 403);
        assert!(denied.to_string().contains("cannot list resource \"events\""), "{denied}");
    }

    #[tokio::test]
    async fn replaced_tokens_refuse_the_old_ones() {
        let authenticator = Authenticator::new(&["old".into()], &["reader".into()], None);
        authenticator.replace_tokens(&["new".into()]);
        assert!(matches!(authenticator.authenticate(Some("Bearer old")).await, Err(ApiError::Unauthorized)));
        assert!(matches!(
            authenticator.authenticate(Some("Bearer reader")).await,
            Err(ApiError::Unauthorized)
        ));
        let user = authenticator.authenticate(Some("Bearer new")).await.unwrap();
        assert!(authorize(&user, "create", Kind::Pod, Some("default"), "").is_ok());
    }
}
