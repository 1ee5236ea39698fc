// A @grpc/grpc-js client of the shopping-cart sample, as a Node user would write one:
// proto-loader reads the sample's .proto files, the calls go to the sidecar's public
// port. It prints one JSON object of what each call answered; the Python test checks it.
//
// node client.js ADDRESS USER_ID PROTO_FILE INCLUDE_DIR...
// (@grpc/grpc-js and @grpc/proto-loader come from NODE_PATH: the test infrastructure
// installs package-lock.json into its cache, not next to this file.)
'use strict';

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [address, userId, protoFile, ...includeDirs] = process.argv.slice(2);
if (!address || !userId || !protoFile || includeDirs.length === 0) {
  console.error('usage: node client.js ADDRESS USER_ID PROTO_FILE INCLUDE_DIR...');
  process.exit(2);
}

const definition = protoLoader.loadSync(protoFile, {
  keepCase: true, // the fields keep their .proto names (user_id, product_id)
  defaults: true, // a repeated field nobody set reads as []
  includeDirs,
});
const pkg = grpc.loadPackageDefinition(definition);
const Service = pkg.com.example.shoppingcart.ShoppingCartService;
const client = new Service(address, grpc.credentials.createInsecure());

// One unary call; a refusal is an answer too (its status code and details), any other
// failure to reach the server ends the script with the error.
function call(method, request) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 30000);
    client[method](request, new grpc.Metadata(), { deadline }, (error, reply) => {
      if (error) {
        resolve({ code: error.code, status: grpc.status[error.code], details: error.details });
      } else {
        resolve({ reply });
      }
    });
  });
}

async function main() {
  const results = {};
  results.add_tshirt = await call('AddItem',
    { user_id: userId, product_id: 'tshirt', name: 'T-Shirt', quantity: 2 });
  results.add_mug = await call('AddItem',
    { user_id: userId, product_id: 'mug', name: 'Mug', quantity: 1 });
  results.after_add = await call('GetCart', { user_id: userId });
  results.remove_tshirt = await call('RemoveItem', { user_id: userId, product_id: 'tshirt' });
  results.after_remove = await call('GetCart', { user_id: userId });
  results.remove_missing = await call('RemoveItem', { user_id: userId, product_id: 'scarf' });
  results.empty_key = await call('AddItem',
    { user_id: '', product_id: 'mug', name: 'Mug', quantity: 1 });
  client.close();
  // A call that never reached the server (UNAVAILABLE, DEADLINE_EXCEEDED) is a failure of
  // the run, not an answer to check: exit non-zero so the test reports it as such.
  const unreached = Object.values(results).filter(
    (r) => r.code === grpc.status.UNAVAILABLE || r.code === grpc.status.DEADLINE_EXCEEDED);
  process.stdout.write(JSON.stringify(results) + '\n');
  if (unreached.length > 0) {
    console.error(`could not reach ${address}: ${unreached[0].details}`);
    process.exit(1);
  }
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
