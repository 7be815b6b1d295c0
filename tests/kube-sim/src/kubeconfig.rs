//! Writes the kubeconfig that kubectl, kube-rs and the Python client use as is: one cluster,
//! user and context named `kube-sim`, with the CA inline when serving TLS and the first
//! `--token` as the user's bearer token.

use std::path::Path;

use base64::Engine;
use serde_json::json;

/// Renders the kubeconfig YAML.
pub fn render(server_url: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    // JSON strings are valid YAML double-quoted scalars, so quoting through serde_json keeps
    // any value safe without a YAML library.
    let quote = |text: &str| json!(text).to_string();
    let mut cluster = format!("    server: {}\n", quote(server_url));
    if let Some(ca_pem) = ca_pem {
        let data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        cluster.push_str(&format!("    certificate-authority-data: {}\n", quote(&data)));
    }
    let user_block = match token {
        Some(token) => format!("  user:\n    token: {}\n", quote(token)),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n{cluster}users:\n- name: kube-sim\n{user_block}contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\npreferences: {{}}\n"
    )
}

/// Writes the kubeconfig atomically (temporary file, then rename), so a reader never sees half.
pub fn write(
    path: &Path,
    server_url: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp-kube-sim");
    std::fs::write(&temporary, render(server_url, ca_pem, token))?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_server_ca_and_token() {
        let text = render("https://127.0.0.1:1234", Some("PEM"), Some("t0k\"en"));
        assert!(text.contains("server: \"https://127.0.0.1:1234\""));
        assert!(text.contains("certificate-authority-data: \"UEVN\""));
        assert!(text.contains("token: \"t0k\\\"en\""));
        let plain = render("http://127.0.0.1:1", None, None);
        assert!(plain.contains("user: {}"));
        assert!(!plain.contains("certificate-authority"));
    }
}
