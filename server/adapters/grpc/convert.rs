//! Proto messages to the service's domain requests and domain results back
//! to proto messages. Decoding only (enums, oneofs, well-known types); what
//! a value must satisfy is checked once, in the service layer.

use std::time::{Duration, SystemTime};

use identity_gateway_azure::{
    arm::ResourceGroup,
    datalake::{Entry, Generation, Page},
    keyvault::Secret,
    sas::{IssuedSas, SasInput, SasMethod},
    sql::{SqlEvent, SqlValue},
};
use identity_gateway_core::{Cloud, GatewayError};
use identity_gateway_service::{
    ops::{
        arm::ResourceGroupRequest,
        blob::BlobRequest,
        datalake::DataLakeRequest,
        sas::SasRequest,
        secret::{SecretRequest, VaultRef},
        sql::SqlRequest,
        token::TokenRequest,
    },
    IdentityRef,
};
use secrecy::ExposeSecret;

use super::sql_rows::SqlRowBatch;
use crate::proto::{
    self, get_secret_request, identity::Selector, query_sql_response::Event, sql_value::Kind,
    DataLakeEntry, GetResourceGroupRequest, GetResourceGroupResponse, GetSecretRequest,
    GetSecretResponse, GetServiceSasRequest, GetServiceSasResponse, GetTokenRequest,
    ListDataLakeRequest, ListDataLakeResponse, QuerySqlRequest, QuerySqlResponse, ReadBlobRequest,
    SqlColumn, SqlQueryDone, SqlResultSetColumns, WatchTokenRequest,
};

/// A wall-clock time as a protobuf timestamp.
pub(super) fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

pub(super) fn identity(identity: Option<proto::Identity>) -> IdentityRef {
    match identity.and_then(|i| i.selector) {
        None => IdentityRef::Default,
        Some(Selector::ClientId(id)) => IdentityRef::ClientId(id),
        Some(Selector::ObjectId(id)) => IdentityRef::ObjectId(id),
        Some(Selector::ResourceId(id)) => IdentityRef::ResourceId(id),
    }
}

fn cloud(value: i32) -> Result<Cloud, GatewayError> {
    match proto::Cloud::try_from(value) {
        Ok(proto::Cloud::Unspecified | proto::Cloud::AzurePublic) => Ok(Cloud::Public),
        Ok(proto::Cloud::AzureUsGovernment) => Ok(Cloud::UsGovernment),
        Ok(proto::Cloud::AzureChina) => Ok(Cloud::China),
        Err(_) => Err(GatewayError::invalid(
            "cloud",
            format!("unknown cloud {value}"),
        )),
    }
}

pub(super) fn token_request(message: GetTokenRequest) -> TokenRequest {
    TokenRequest {
        resource: message.resource,
        identity: identity(message.identity),
    }
}

pub(super) fn watch_request(message: WatchTokenRequest) -> TokenRequest {
    TokenRequest {
        resource: message.resource,
        identity: identity(message.identity),
    }
}

pub(super) fn secret_request(message: GetSecretRequest) -> Result<SecretRequest, GatewayError> {
    Ok(SecretRequest {
        vault: message.vault.map(|v| match v {
            get_secret_request::Vault::VaultUrl(url) => VaultRef::Url(url),
            get_secret_request::Vault::VaultName(name) => VaultRef::Name(name),
        }),
        cloud: cloud(message.cloud)?,
        name: message.name,
        version: message.version,
        identity: identity(message.identity),
        bypass_cache: message.bypass_cache,
    })
}

pub(super) fn secret(secret: &Secret) -> GetSecretResponse {
    GetSecretResponse {
        value: secret.value.expose_secret().to_string(),
        id: secret.id.clone(),
        name: secret.name.clone(),
        version: secret.version.clone(),
        content_type: secret.content_type.clone().unwrap_or_default(),
        enabled: secret.enabled,
        created: secret.created.map(timestamp),
        updated: secret.updated.map(timestamp),
        not_before: secret.not_before.map(timestamp),
        expires: secret.expires.map(timestamp),
        tags: secret.tags.clone().into_iter().collect(),
        managed: secret.managed,
    }
}

pub(super) fn data_lake_request(
    message: ListDataLakeRequest,
) -> Result<DataLakeRequest, GatewayError> {
    let generation = match proto::DataLakeGeneration::try_from(message.generation) {
        Ok(proto::DataLakeGeneration::Unspecified) => None,
        Ok(proto::DataLakeGeneration::Gen1) => Some(Generation::Gen1),
        Ok(proto::DataLakeGeneration::Gen2) => Some(Generation::Gen2),
        Err(_) => {
            return Err(GatewayError::invalid(
                "generation",
                format!("unknown generation {}", message.generation),
            ))
        }
    };
    Ok(DataLakeRequest {
        account_url: message.account_url,
        generation,
        filesystem: message.filesystem,
        path: message.path,
        recursive: message.recursive,
        page_size: message.page_size,
        continuation: message.continuation,
        identity: identity(message.identity),
    })
}

pub(super) fn data_lake_page(page: Page) -> ListDataLakeResponse {
    ListDataLakeResponse {
        entries: page.entries.into_iter().map(data_lake_entry).collect(),
        continuation: page.continuation.unwrap_or_default(),
    }
}

fn data_lake_entry(entry: Entry) -> DataLakeEntry {
    DataLakeEntry {
        name: entry.name,
        is_directory: entry.is_directory,
        length: entry.length,
        modified: entry.modified.map(timestamp),
        owner: entry.owner,
        group: entry.group,
        permissions: entry.permissions,
    }
}

pub(super) fn sas_request(message: GetServiceSasRequest) -> Result<SasRequest, GatewayError> {
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
    Ok(SasRequest {
        method,
        cloud: cloud(message.cloud)?,
        identity: identity(message.identity),
        input: SasInput {
            account: message.account,
            container: message.container,
            blob: message.blob,
            permissions: message.permissions,
            expires_in: message
                .expires_in
                .map(|d| {
                    Duration::try_from(d).map_err(|_| {
                        GatewayError::invalid("expires_in", "must be a positive duration")
                    })
                })
                .transpose()?,
            start: message
                .start
                .map(|t| {
                    SystemTime::try_from(t)
                        .map_err(|_| GatewayError::invalid("start", "is not a valid time"))
                })
                .transpose()?,
            ip_range: message.ip_range,
            allow_http: message.allow_http,
            subscription_id: message.subscription_id,
            resource_group: message.resource_group,
            blob_endpoint: message.blob_endpoint,
        },
    })
}

pub(super) fn sas(issued: &IssuedSas) -> GetServiceSasResponse {
    GetServiceSasResponse {
        sas_token: issued.token.expose_secret().to_string(),
        url: issued.url.expose_secret().to_string(),
        expires_on: Some(timestamp(issued.expires_on)),
        signed_resource: issued.signed_resource.code().to_string(),
        signed_permissions: issued.signed_permissions.clone(),
    }
}

pub(super) fn blob_request(message: ReadBlobRequest) -> BlobRequest {
    BlobRequest {
        blob_url: message.blob_url,
        identity: identity(message.identity),
        offset: message.offset,
        length: message.length,
    }
}

pub(super) fn resource_group_request(
    message: GetResourceGroupRequest,
) -> Result<ResourceGroupRequest, GatewayError> {
    Ok(ResourceGroupRequest {
        cloud: cloud(message.cloud)?,
        subscription_id: message.subscription_id,
        name: message.name,
        identity: identity(message.identity),
    })
}

pub(super) fn resource_group(group: ResourceGroup) -> GetResourceGroupResponse {
    GetResourceGroupResponse {
        id: group.id,
        name: group.name,
        r#type: group.resource_type,
        location: group.location,
        provisioning_state: group.provisioning_state,
        managed_by: group.managed_by.unwrap_or_default(),
        tags: group.tags.into_iter().collect(),
    }
}

pub(super) fn sql_request(message: QuerySqlRequest) -> Result<SqlRequest, GatewayError> {
    let timeout = match message.timeout {
        None => None,
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            return Err(GatewayError::invalid("timeout", "must not be negative"))
        }
        Some(d) => Some(Duration::new(d.seconds as u64, d.nanos as u32)),
    };
    let parameters = message
        .parameters
        .into_iter()
        .enumerate()
        .map(|(i, p)| sql_value(p.kind, &format!("parameters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SqlRequest {
        server: message.server,
        port: message.port,
        database: message.database,
        query: message.query,
        parameters,
        max_rows: message.max_rows,
        timeout,
        identity: identity(message.identity),
    })
}

pub(super) fn sql_value(kind: Option<Kind>, field: &str) -> Result<SqlValue, GatewayError> {
    Ok(match kind {
        None => {
            return Err(GatewayError::invalid(
                field,
                "has no value (set `null` for SQL NULL)",
            ))
        }
        Some(Kind::Null(_)) => SqlValue::Null,
        Some(Kind::Bool(b)) => SqlValue::Bool(b),
        Some(Kind::Int(i)) => SqlValue::Int(i),
        Some(Kind::Float(f)) => SqlValue::Float(f),
        Some(Kind::Decimal(d)) => SqlValue::Decimal(d),
        Some(Kind::String(s)) => SqlValue::String(s),
        Some(Kind::Bytes(b)) => SqlValue::Bytes(b),
        Some(Kind::Guid(g)) => SqlValue::Guid(g),
        Some(Kind::Timestamp(t)) => {
            let nanos = u32::try_from(t.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| GatewayError::invalid(field, "timestamp nanos must be in 0..1e9"))?;
            SqlValue::Timestamp {
                seconds: t.seconds,
                nanos,
            }
        }
        Some(Kind::Date(d)) => SqlValue::Date(d),
        Some(Kind::Time(t)) => SqlValue::Time(t),
    })
}

pub(super) fn sql_event(event: SqlEvent) -> QuerySqlResponse {
    let event = match event {
        SqlEvent::Columns {
            result_set,
            columns,
        } => Event::Columns(SqlResultSetColumns {
            result_set,
            columns: columns
                .into_iter()
                .map(|c| SqlColumn {
                    name: c.name,
                    r#type: c.type_name,
                    nullable: c.nullable,
                })
                .collect(),
        }),
        SqlEvent::Rows { result_set, rows } => Event::Rows(SqlRowBatch::new(result_set, rows)),
        SqlEvent::Done {
            rows_per_result_set,
            rows_affected,
            truncated,
        } => Event::Done(SqlQueryDone {
            rows_per_result_set,
            rows_affected,
            truncated,
        }),
    };
    QuerySqlResponse { event: Some(event) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_without_a_value_are_refused() {
        let err = sql_value(None, "parameters[1]").unwrap_err();
        assert!(
            matches!(err, GatewayError::InvalidArgument { field, .. } if field == "parameters[1]")
        );
        assert_eq!(sql_value(Some(Kind::Null(0)), "p").unwrap(), SqlValue::Null);
        let bad_nanos = Some(Kind::Timestamp(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        }));
        assert!(sql_value(bad_nanos, "p").is_err());
    }

    #[test]
    fn events_map_to_proto() {
        let response = sql_event(SqlEvent::Rows {
            result_set: 1,
            rows: [vec![SqlValue::Null, SqlValue::Int(3)]]
                .into_iter()
                .collect(),
        });
        let Some(Event::Rows(batch)) = response.event else {
            panic!("not rows")
        };
        assert_eq!(batch.result_set(), 1);
        let rows: Vec<_> = batch.rows().iter().map(|r| r.to_values()).collect();
        assert_eq!(rows, [vec![SqlValue::Null, SqlValue::Int(3)]]);
    }
}
