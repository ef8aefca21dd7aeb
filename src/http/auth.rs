//! Bearer tokens: minting (`doculearn token`) and checking (an extractor for
//! handlers, and a function for the WebSocket handshake). HS256 with the
//! configured secret by default, or RS256/ES256 with an identity provider's
//! public key; `exp`, `nbf`, issuer and audience are checked and the
//! algorithm is pinned (a token signed otherwise is refused); `sub` is the
//! user's UUID and `role` may be `admin`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::config::{AuthSettings, JwtAlgorithm};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub iss: String,
    pub aud: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The caller, as a verified token says.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: Uuid,
    pub admin: bool,
    /// Expiry, seconds since the epoch (sockets close when it passes).
    pub exp: i64,
}

pub struct AuthKeys {
    /// Only with a secret (HS256) or a configured private key.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    algorithm: Algorithm,
    validation: Validation,
    issuer: String,
    audience: String,
}

fn read_pem(setting: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("config: setting `{setting}`: cannot read {}: {e}", path.display()))
}

impl AuthKeys {
    /// HS256 with a shared secret (tests, scripts).
    pub fn hs256(secret: &str, issuer: &str, audience: &str) -> Self {
        Self::build(
            Algorithm::HS256,
            Some(EncodingKey::from_secret(secret.as_bytes())),
            DecodingKey::from_secret(secret.as_bytes()),
            issuer,
            audience,
        )
    }

    fn build(
        algorithm: Algorithm,
        encoding: Option<EncodingKey>,
        decoding: DecodingKey,
        issuer: &str,
        audience: &str,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        AuthKeys {
            encoding,
            decoding,
            algorithm,
            validation,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    pub fn from_settings(a: &AuthSettings) -> anyhow::Result<Self> {
        let private = |setting: &str| -> anyhow::Result<Option<Vec<u8>>> {
            if a.private_key_file.as_os_str().is_empty() {
                Ok(None)
            } else {
                read_pem(setting, &a.private_key_file).map(Some)
            }
        };
        Ok(match a.algorithm {
            JwtAlgorithm::HS256 => Self::hs256(a.jwt_secret.expose_secret(), &a.issuer, &a.audience),
            JwtAlgorithm::RS256 => {
                let public = read_pem("auth.public_key_file", &a.public_key_file)?;
                let decoding = DecodingKey::from_rsa_pem(&public).map_err(|e| {
                    anyhow::anyhow!("config: setting `auth.public_key_file`: not an RSA public key: {e}")
                })?;
                let encoding = private("auth.private_key_file")?
                    .map(|p| EncodingKey::from_rsa_pem(&p))
                    .transpose()
                    .map_err(|e| {
                        anyhow::anyhow!("config: setting `auth.private_key_file`: not an RSA private key: {e}")
                    })?;
                Self::build(Algorithm::RS256, encoding, decoding, &a.issuer, &a.audience)
            }
            JwtAlgorithm::ES256 => {
                let public = read_pem("auth.public_key_file", &a.public_key_file)?;
                let decoding = DecodingKey::from_ec_pem(&public).map_err(|e| {
                    anyhow::anyhow!("config: setting `auth.public_key_file`: not an EC public key: {e}")
                })?;
                let encoding = private("auth.private_key_file")?
                    .map(|p| EncodingKey::from_ec_pem(&p))
                    .transpose()
                    .map_err(|e| {
                        anyhow::anyhow!("config: setting `auth.private_key_file`: not an EC private key: {e}")
                    })?;
                Self::build(Algorithm::ES256, encoding, decoding, &a.issuer, &a.audience)
            }
        })
    }

    /// A token for `user`, valid for `ttl_secs`. Panics without a signing key
    /// (see [`AuthKeys::try_mint`]).
    pub fn mint(&self, user: Uuid, admin: bool, ttl_secs: i64) -> String {
        self.try_mint(user, admin, ttl_secs).expect("a signing key")
    }

    /// A token for `user`, or why none can be made here.
    pub fn try_mint(&self, user: Uuid, admin: bool, ttl_secs: i64) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl_secs,
            iat: now,
            nbf: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            role: admin.then(|| "admin".to_string()),
        };
        let key = self
            .encoding
            .as_ref()
            .ok_or("no signing key: set auth.private_key_file to mint RS256/ES256 tokens here")?;
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    /// Checks a token; the error is the message a 401 carries.
    pub fn verify(&self, token: &str) -> Result<AuthUser, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                ErrorKind::InvalidSignature => "the token's signature is not valid",
                ErrorKind::InvalidIssuer => "the token was issued for another issuer",
                ErrorKind::InvalidAudience => "the token was issued for another audience",
                ErrorKind::InvalidAlgorithm => "the token uses an algorithm this server does not accept",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, sub, iss, aud)",
                _ => "the token is malformed",
            }
            .to_string()
        })?;
        let user_id =
            Uuid::parse_str(&data.claims.sub).map_err(|_| "the token's sub is not a user id (UUID)".to_string())?;
        Ok(AuthUser {
            user_id,
            admin: data.claims.role.as_deref() == Some("admin"),
            exp: data.claims.exp,
        })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not readable".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        state.auth.verify(token.trim()).map_err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str, aud: &str) -> AuthKeys {
        AuthKeys::hs256(secret, "doculearn", aud)
    }

    #[test]
    fn minted_tokens_verify_and_foreign_ones_do_not() {
        let k = keys("0123456789abcdef0123456789abcdef", "doculearn");
        let user = Uuid::new_v4();
        let ok = k.verify(&k.mint(user, true, 60)).unwrap();
        assert_eq!(ok.user_id, user);
        assert!(ok.admin);
        assert_eq!(
            k.verify(&k.mint(user, false, -120)).unwrap_err(),
            "the token has expired"
        );
        let other = keys("another-secret-another-secret-xx", "doculearn");
        assert_eq!(
            k.verify(&other.mint(user, false, 60)).unwrap_err(),
            "the token's signature is not valid"
        );
        let aud = keys("0123456789abcdef0123456789abcdef", "elsewhere");
        assert_eq!(
            k.verify(&aud.mint(user, false, 60)).unwrap_err(),
            "the token was issued for another audience"
        );
        assert_eq!(k.verify("not.a.token").unwrap_err(), "the token is malformed");
    }
}
