//! Bearer tokens: minting (`doculearn token`) and checking (an extractor for
//! handlers, and a function for the WebSocket handshake). HS256 with the
//! configured secret; `exp`, `nbf`, issuer and audience are checked; `sub` is
//! the user's UUID and `role` may be `admin`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::config::AuthSettings;

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
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl AuthKeys {
    pub fn from_settings(a: &AuthSettings) -> Self {
        let secret = a.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[a.issuer.as_str()]);
        validation.set_audience(&[a.audience.as_str()]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        AuthKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
        }
    }

    /// A token for `user`, valid for `ttl_secs`.
    pub fn mint(&self, user: Uuid, admin: bool, ttl_secs: i64) -> String {
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
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
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
    use secrecy::SecretString;

    fn keys(secret: &str, aud: &str) -> AuthKeys {
        AuthKeys::from_settings(&AuthSettings {
            jwt_secret: SecretString::from(secret.to_string()),
            issuer: "doculearn".into(),
            audience: aud.into(),
            token_ttl_secs: 60,
            service_token: SecretString::from(String::new()),
        })
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
