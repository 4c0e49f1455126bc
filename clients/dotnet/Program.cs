// Gets a token from identity-gateway and, given a vault URL and a secret name,
// reads that secret with the Azure SDK's SecretClient using the gateway as its
// credential. Prints expiries and names, never tokens or secret values.
//
//   dotnet run -- [vault-url secret-name]
using Azure.Security.KeyVault.Secrets;
using Grpc.Core;
using IdentityGateway.Sample;
using IdentityGateway.V1;

using var channel = GatewayChannel.Create();
var client = new IdentityGateway.V1.IdentityGateway.IdentityGatewayClient(channel);

try
{
    var token = await client.GetTokenAsync(
        new GetTokenRequest { Resource = "https://vault.azure.net" },
        deadline: DateTime.UtcNow.AddSeconds(10));
    Console.WriteLine($"token for {token.Resource} ({token.TokenType}), expires {token.ExpiresOn.ToDateTimeOffset():O}");
}
catch (RpcException e)
{
    // e.StatusCode is the gateway's verdict (InvalidArgument, FailedPrecondition, ...).
    Console.Error.WriteLine($"GetToken failed: {e.StatusCode}: {e.Status.Detail}");
    return 1;
}

if (args.Length == 2)
{
    var secrets = new SecretClient(new Uri(args[0]), new GatewayTokenCredential(client));
    KeyVaultSecret secret = await secrets.GetSecretAsync(args[1]);
    Console.WriteLine($"read secret {secret.Name} (version {secret.Properties.Version})");
}
return 0;
