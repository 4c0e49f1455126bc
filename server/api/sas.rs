//! GetServiceSas: a blob or container SAS, by user delegation (default) or
//! ARM listServiceSas. The SAS itself is never logged.

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::{audit, request, token::timestamp};
use crate::{
    azure::sas::{self, SasInput, SasMethod},
    error::GatewayError,
    gateway::GatewayState,
    policy::Target,
    proto::{self, GetServiceSasRequest, GetServiceSasResponse},
};

pub(super) async fn get_service_sas(
    state: &GatewayState,
    request: Request<GetServiceSasRequest>,
) -> Result<Response<GetServiceSasResponse>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let target = format!(
        "/blob/{}/{}{}{}",
        message.account,
        message.container,
        if message.blob.is_empty() { "" } else { "/" },
        message.blob
    );
    let outcome = async {
        let method = match proto::SasMethod::try_from(message.method) {
            Ok(proto::SasMethod::Unspecified | proto::SasMethod::UserDelegation) => {
                SasMethod::UserDelegation
            }
            Ok(proto::SasMethod::ArmListServiceSas) => SasMethod::ArmListServiceSas,
            Err(_) => {
                return Err(GatewayError::invalid(
                    "method",
                    format!("unknown method {}", message.method),
                ))
            }
        };
        let cloud = request::cloud(message.cloud)?;
        let selector = request::identity(message.identity)?;
        let input = SasInput {
            account: message.account,
            container: message.container,
            blob: message.blob,
            permissions: message.permissions,
            expires_in: message.expires_in.map(duration).transpose()?,
            start: message.start.map(start_time).transpose()?,
            ip_range: message.ip_range,
            allow_http: message.allow_http,
            subscription_id: message.subscription_id,
            resource_group: message.resource_group,
            blob_endpoint: message.blob_endpoint,
        };
        let plan = sas::plan(state, method, &input, cloud)?;
        state
            .policy
            .check(peer, &selector, Target::StorageAccount(&plan.account))?;
        if method == SasMethod::ArmListServiceSas {
            state
                .policy
                .check(peer, &selector, Target::Subscription(&plan.subscription_id))?;
        }
        let issued = sas::issue(state, budget, &selector, cloud, &plan).await?;
        Ok(Response::new(GetServiceSasResponse {
            sas_token: issued.token.expose_secret().to_string(),
            url: issued.url.expose_secret().to_string(),
            expires_on: Some(timestamp(issued.expires_on)),
            signed_resource: issued.signed_resource.code().to_string(),
            signed_permissions: issued.signed_permissions,
        }))
    }
    .await
    .map_err(Status::from);
    audit::record(&caller, "GetServiceSas", &target, &outcome);
    outcome
}

fn duration(d: prost_types::Duration) -> Result<Duration, GatewayError> {
    Duration::try_from(d)
        .map_err(|_| GatewayError::invalid("expires_in", "must be a positive duration"))
}

fn start_time(t: prost_types::Timestamp) -> Result<SystemTime, GatewayError> {
    SystemTime::try_from(t).map_err(|_| GatewayError::invalid("start", "is not a valid time"))
}
