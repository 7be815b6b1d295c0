//! How the Kubernetes runtime finds its cluster: from a kubeconfig file when given, otherwise
//! the in-cluster config ([`in_cluster`]: a Pod's environment and service-account files, the
//! token re-read as it rotates), then `~/.kube/config` (or `$KUBECONFIG`) ([`client`]); or, for
//! EKS, through AWS ([`eks`]). Both renewing tokens go through one layer ([`bearer`]). Every
//! client waits for the API server's rate and retries what it is told to retry later
//! ([`throttle`]).

mod bearer;
pub mod eks;
pub mod in_cluster;
mod throttle;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::config::KubernetesSettings;

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("cannot read the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither an in-cluster config nor a kubeconfig could be found.
    #[error(
        "no Kubernetes configuration: not in a cluster ({in_cluster}), and no kubeconfig ({kubeconfig}); set runtime.kubeconfig"
    )]
    NotFound {
        /// Why the in-cluster config failed.
        in_cluster: String,
        /// Why the default kubeconfig failed.
        kubeconfig: String,
    },
    /// The configuration was found but the client cannot use it.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Builds the client the settings describe.
pub async fn client(settings: &KubernetesSettings) -> Result<Client, ConnectError> {
    let options = KubeConfigOptions { context: settings.context.clone(), ..Default::default() };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let path_text = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|source| ConnectError::Kubeconfig { path: path_text.clone(), source })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| ConnectError::Kubeconfig { path: path_text, source })?
        }
        None => match in_cluster::InCluster::from_env() {
            Ok(cluster) => match cluster.client(settings.namespace(), settings.api_rate) {
                Ok(client) => {
                    tracing::info!(
                        api_server = %cluster.url,
                        service_account = %cluster.directory.display(),
                        pod_namespace = cluster.pod_namespace().as_deref().unwrap_or("unknown"),
                        namespace = settings.namespace(),
                        "using the in-cluster config"
                    );
                    return Ok(client);
                }
                Err(in_cluster) => {
                    // In a Pod whose service-account files are unusable: say so, since a
                    // kubeconfig that happens to work would otherwise hide it.
                    tracing::warn!(error = %in_cluster, "the in-cluster config is unusable; trying the kubeconfig");
                    kubeconfig_or(&options, in_cluster).await?
                }
            },
            Err(in_cluster) => kubeconfig_or(&options, in_cluster).await?,
        },
    };
    Ok(throttle::client_builder(config, settings.api_rate).map_err(ConnectError::Client)?.build())
}

/// The default kubeconfig, when the in-cluster config failed; both reasons when neither works.
async fn kubeconfig_or(
    options: &KubeConfigOptions,
    in_cluster: in_cluster::InClusterError,
) -> Result<Config, ConnectError> {
    Config::from_kubeconfig(options).await.map_err(|kubeconfig| ConnectError::NotFound {
        in_cluster: in_cluster.to_string(),
        kubeconfig: kubeconfig.to_string(),
    })
}
