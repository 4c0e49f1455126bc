using Azure.Core;
using IdentityGateway.V1;

namespace IdentityGateway.Sample;

/// <summary>
/// An Azure.Core <see cref="TokenCredential"/> backed by identity-gateway, so
/// any Azure SDK for .NET client (SecretClient, BlobServiceClient, ...) gets
/// its managed-identity tokens from the machine's shared gateway.
/// A scope "X/.default" asks for a token for resource "X".
/// </summary>
public sealed class GatewayTokenCredential : TokenCredential
{
    private readonly IdentityGateway.V1.IdentityGateway.IdentityGatewayClient _client;
    private readonly Identity? _identity;

    /// <param name="client">A client on <see cref="GatewayChannel.Create"/>.</param>
    /// <param name="clientId">A user-assigned identity's client id; null for system-assigned.</param>
    public GatewayTokenCredential(IdentityGateway.V1.IdentityGateway.IdentityGatewayClient client, string? clientId = null)
    {
        _client = client;
        _identity = clientId is null ? null : new Identity { ClientId = clientId };
    }

    public override AccessToken GetToken(TokenRequestContext context, CancellationToken cancellationToken) =>
        ToAccessToken(_client.GetToken(Request(context), cancellationToken: cancellationToken));

    public override async ValueTask<AccessToken> GetTokenAsync(TokenRequestContext context, CancellationToken cancellationToken) =>
        ToAccessToken(await _client.GetTokenAsync(Request(context), cancellationToken: cancellationToken).ConfigureAwait(false));

    private GetTokenRequest Request(TokenRequestContext context)
    {
        if (context.Scopes.Length != 1)
        {
            throw new ArgumentException($"managed identities take exactly one scope, got {context.Scopes.Length}");
        }
        const string suffix = "/.default";
        var scope = context.Scopes[0];
        var resource = scope.EndsWith(suffix, StringComparison.Ordinal) ? scope[..^suffix.Length] : scope;
        var request = new GetTokenRequest { Resource = resource };
        if (_identity is not null)
        {
            request.Identity = _identity;
        }
        return request;
    }

    private static AccessToken ToAccessToken(GetTokenResponse reply) =>
        new(reply.AccessToken, reply.ExpiresOn.ToDateTimeOffset());
}
