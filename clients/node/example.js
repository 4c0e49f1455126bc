// Gets a token from identity-gateway over its Unix socket and prints what it
// is for and when it expires (never the token itself).
//
//   node example.js [resource]
//
// The socket comes from IDENTITY_GATEWAY_SOCKET, else
// /run/identity-gateway/gateway.sock. The API is loaded from the repository's
// proto/ at run time (IDENTITY_GATEWAY_PROTO_DIR overrides where).
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const socket = process.env.IDENTITY_GATEWAY_SOCKET || "/run/identity-gateway/gateway.sock";
const protoDir = process.env.IDENTITY_GATEWAY_PROTO_DIR || path.join(__dirname, "..", "..", "proto");
const resource = process.argv[2] || "https://vault.azure.net";

const definition = protoLoader.loadSync("identity_gateway/v1/gateway.proto", {
  includeDirs: [protoDir],
  keepCase: true, // field names as in the .proto: expires_on, access_token
  longs: String,
  enums: String,
  defaults: true,
});
const { IdentityGateway } = grpc.loadPackageDefinition(definition).identity_gateway.v1;

// "unix:" + an absolute path; grpc-js sends "localhost" as the HTTP/2 authority.
const client = new IdentityGateway(`unix:${path.resolve(socket)}`, grpc.credentials.createInsecure());
const deadline = new Date(Date.now() + 10_000);

client.GetToken({ resource }, { deadline }, (err, reply) => {
  client.close();
  if (err) {
    // err.code is the gRPC status (e.g. grpc.status.INVALID_ARGUMENT); err.details says why.
    console.error(`GetToken failed: ${grpc.status[err.code]}: ${err.details}`);
    process.exit(1);
  }
  const expires = new Date(Number(reply.expires_on.seconds) * 1000);
  console.log(`token for ${reply.resource} (${reply.token_type}), expires ${expires.toISOString()}`);
});
