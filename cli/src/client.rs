//! The API client: plain HTTP to the local cloud, SigV4-signed (service `execute-api`)
//! requests to a real deployment, whose HTTP API uses IAM authorisation.

use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error(
        "cannot sign the request: {0}; set AWS credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID) or pass --no-sign for a local endpoint"
    )]
    Signing(String),
    #[error("{0}")]
    Usage(String),
}

/// How to sign: decided once from the endpoint unless the user says otherwise.
#[derive(Debug, Clone)]
struct Signer {
    region: String,
    credentials: aws_credential_types::Credentials,
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    signer: Option<Signer>,
}

/// `https://<id>.execute-api.<region>.amazonaws.com` -> the region.
pub fn region_of(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    let _api_id = parts.next()?;
    (parts.next()? == "execute-api").then(|| parts.next().map(str::to_string))?
}

/// Local endpoints (the local cloud) take unsigned requests.
pub fn is_local(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl ApiClient {
    pub async fn new(endpoint: &str, sign: Option<bool>) -> Result<Self, CliError> {
        let base = endpoint.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::Usage(format!(
                "--endpoint {endpoint:?} is not a URL; use the stack's ApiEndpoint output"
            )));
        }
        let signer = if sign.unwrap_or(!is_local(&base)) {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let region = region_of(&base)
                .or_else(|| config.region().map(|r| r.to_string()))
                .ok_or_else(|| CliError::Signing("no region: set AWS_REGION".into()))?;
            let provider = config
                .credentials_provider()
                .ok_or_else(|| CliError::Signing("no credentials provider".into()))?;
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|e| CliError::Signing(e.to_string()))?;
            Some(Signer {
                region,
                credentials,
            })
        } else {
            None
        };
        Ok(Self {
            base,
            http: reqwest::Client::new(),
            signer,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(reqwest::Method::DELETE, path, None, &[]).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(reqwest::Method::POST, path, Some(body.to_string()), headers)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        extra: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let body = body.unwrap_or_default();
        let mut headers: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        if !body.is_empty() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        if let Some(signer) = &self.signer {
            headers.extend(sign(
                signer,
                method.as_str(),
                &url,
                &headers,
                body.as_bytes(),
            )?);
        }
        let mut request = self.http.request(method, &url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|source| CliError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        if status >= 400 {
            let message = json["error"]["message"]
                .as_str()
                .or(json["message"].as_str())
                .map(str::to_string)
                .unwrap_or(text);
            return Err(CliError::Api { status, message });
        }
        Ok(json)
    }
}

/// The SigV4 headers for one request (header signing, payload hashed).
fn sign(
    signer: &Signer,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>, CliError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = signer.credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&signer.region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::Signing(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| CliError::Signing(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| CliError::Signing(e.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_execute_api_hosts() {
        assert_eq!(
            region_of("https://abc123.execute-api.eu-west-1.amazonaws.com"),
            Some("eu-west-1".into())
        );
        assert_eq!(
            region_of("http://127.0.0.1:4566/_aws/execute-api/abc"),
            None
        );
    }

    #[test]
    fn loopback_endpoints_are_local() {
        assert!(is_local("http://127.0.0.1:4566/_aws/execute-api/abc"));
        assert!(is_local("http://localhost:8080"));
        assert!(!is_local(
            "https://abc123.execute-api.us-east-1.amazonaws.com"
        ));
    }

    #[test]
    fn signed_requests_carry_a_sigv4_authorization_for_execute_api() {
        let signer = Signer {
            region: "us-east-1".into(),
            credentials: aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ),
        };
        let headers = sign(
            &signer,
            "GET",
            "https://abc123.execute-api.us-east-1.amazonaws.com/clusters",
            &[],
            b"",
        )
        .unwrap();
        let authorization = headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authorization}"
        );
        assert!(
            authorization.contains("/us-east-1/execute-api/aws4_request"),
            "{authorization}"
        );
        assert!(headers.iter().any(|(k, _)| k == "x-amz-date"));
    }
}
