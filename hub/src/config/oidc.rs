//! `[auth.oidc]`: how the hub logs users in through an OpenID Connect provider.

use serde::Deserialize;

use super::Secret;

/// OpenID Connect login settings. Present = OIDC login replaces the development login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery at `<issuer>/.well-known/openid-configuration`),
    /// e.g. `https://identity.data.destination-earth.eu/auth/realms/dedl`.
    pub issuer: String,
    /// The hub's client id at the provider.
    pub client_id: String,
    /// The client secret (or `STACKHUB_OIDC_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// The redirect URI registered at the provider; default:
    /// `<public_url or request origin><base_url>hub/oauth_callback`.
    pub redirect_url: Option<String>,
    /// Scopes to request (`openid` is always added).
    pub scopes: Vec<String>,
    /// Claim holding the user name (normalized to a safe server name).
    pub username_claim: String,
    /// Dotted path of the roles claim (Keycloak: `realm_access.roles`).
    pub roles_claim: String,
    /// Claim holding the groups (Keycloak-style `/a/b` paths allowed).
    pub groups_claim: String,
    /// Also read claims from the userinfo endpoint (merged over the id_token's).
    pub userinfo: bool,
    /// Roles allowed to log in (any one suffices); empty with `allowed_groups` empty = anyone.
    pub allowed_roles: Vec<String>,
    /// Groups allowed to log in (path, hub name or last segment).
    pub allowed_groups: Vec<String>,
    /// Roles that make a user admin.
    pub admin_roles: Vec<String>,
    /// Groups that make a user admin.
    pub admin_groups: Vec<String>,
    /// Replace the user's hub groups with the provider's groups at every login.
    pub manage_groups: bool,
    /// Seconds of clock skew accepted on the id_token's expiry.
    pub leeway_secs: u64,
    /// Refresh the access token when it expires within this many seconds.
    pub refresh_margin_secs: u64,
    /// Redirect to the provider's end-session endpoint after the hub's logout.
    pub end_session: bool,
    /// Key encrypting the provider's tokens at rest (hex, 32 bytes; or
    /// `STACKHUB_OIDC_TOKEN_KEY`); default: derived from `cookie_secret`, else random per process
    /// (stored tokens then cannot be used after a restart and users sign in again).
    pub token_key: Option<Secret>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            redirect_url: None,
            scopes: vec![
                "openid".to_owned(),
                "profile".to_owned(),
                "email".to_owned(),
                "offline_access".to_owned(),
            ],
            username_claim: "preferred_username".to_owned(),
            roles_claim: "realm_access.roles".to_owned(),
            groups_claim: "groups".to_owned(),
            userinfo: false,
            allowed_roles: Vec::new(),
            allowed_groups: Vec::new(),
            admin_roles: Vec::new(),
            admin_groups: Vec::new(),
            manage_groups: true,
            leeway_secs: 30,
            refresh_margin_secs: 30,
            end_session: true,
            token_key: None,
        }
    }
}

impl OidcConfig {
    /// The first bad key and why.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, r: &str| Err((format!("auth.oidc.{k}"), r.to_owned()));
        match url::Url::parse(&self.issuer) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return bad("issuer", "must be an http(s) URL"),
        }
        if self.client_id.is_empty() {
            return bad("client_id", "must not be empty");
        }
        if let Some(r) = &self.redirect_url
            && url::Url::parse(r).is_err()
        {
            return bad("redirect_url", "must be an absolute URL");
        }
        if self.username_claim.is_empty() {
            return bad("username_claim", "must not be empty");
        }
        if let Some(k) = &self.token_key {
            match hex::decode(k.expose()) {
                Ok(b) if b.len() == 32 => {}
                _ => return bad("token_key", "must be 32 bytes of hex"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Config;

    fn load(toml: &str, env: &HashMap<&str, &str>) -> Result<Config, String> {
        let path = std::env::temp_dir().join(format!(
            "stackhub-oidc-config-{}-{}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, toml).unwrap();
        let r = Config::load(Some(&path), env).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn one_section_enables_oidc_and_secrets_stay_hidden() {
        let base = "[auth.oidc]\nissuer = \"https://idp.example.org/realms/dedl\"\n\
                    client_id = \"stackhub\"\n";
        let env = HashMap::from([("STACKHUB_OIDC_CLIENT_SECRET", "from-the-env")]);
        let c = load(base, &env).unwrap();
        let oidc = c.auth.oidc.as_ref().unwrap();
        assert_eq!(
            oidc.client_secret.as_ref().unwrap().expose(),
            "from-the-env"
        );
        assert_eq!(oidc.roles_claim, "realm_access.roles");
        assert!(!format!("{c:?}").contains("from-the-env"));
        let err = load(&format!("{base}client_secret = 12345\n"), &HashMap::new()).unwrap_err();
        assert!(
            err.contains("client_secret") && !err.contains("12345"),
            "{err}"
        );
        let err = load(&format!("{base}token_key = \"abcd\"\n"), &HashMap::new()).unwrap_err();
        assert!(
            err.contains("auth.oidc.token_key") && !err.contains("abcd"),
            "{err}"
        );
        let err = load(
            "[auth.oidc]\nissuer = \"not a url\"\nclient_id = \"x\"\n",
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("auth.oidc.issuer"), "{err}");
        let err = load(
            &format!("{base}[[quotas]]\nrole = \"x\"\ncpus = 1\nmemory = \"lots\"\n"),
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("quotas[0].memory"), "{err}");
        assert!(load("", &HashMap::new()).unwrap().auth.oidc.is_none());
    }
}
