/*
 * A shopping cart written with the published npm SDK
 * @lightbend/akkaserverless-javascript-sdk 0.32.0.
 *
 * A project directory holds this file, package.json, the .proto files under
 * proto/ and `user-function.desc` (their descriptor set with all imports, as the
 * SDK's users compile it); run it there with `npm start` or `node index.js`.
 * It serves on HOST/PORT. SNAPSHOT_EVERY and PASSIVATION_TIMEOUT_MS set the
 * entity's snapshot interval and idle passivation timeout.
 */

const { AkkaServerless, EventSourcedEntity } = require("@lightbend/akkaserverless-javascript-sdk");

const options = {
  includeDirs: ["proto"],
};
if (process.env.SNAPSHOT_EVERY) {
  options.snapshotEvery = parseInt(process.env.SNAPSHOT_EVERY, 10);
}
if (process.env.PASSIVATION_TIMEOUT_MS) {
  options.entityPassivationStrategy = {
    timeout: parseInt(process.env.PASSIVATION_TIMEOUT_MS, 10),
  };
}

const entity = new EventSourcedEntity(
  ["compatcart/cart_api.proto", "compatcart/cart_domain.proto"],
  "com.example.compat.cart.ShoppingCartService",
  "shopping-cart",
  options,
);

const domain = "com.example.compat.cart.domain.";
const ItemAdded = entity.lookupType(domain + "ItemAdded");
const ItemRemoved = entity.lookupType(domain + "ItemRemoved");
const Cart = entity.lookupType(domain + "Cart");

entity.setInitial(() => Cart.create({ items: [] }));

entity.setBehavior(() => ({
  commandHandlers: {
    AddItem: addItem,
    RemoveItem: removeItem,
    GetCart: getCart,
  },
  eventHandlers: {
    ItemAdded: itemAdded,
    ItemRemoved: itemRemoved,
  },
}));

function addItem(command, cart, ctx) {
  if (command.quantity <= 0) {
    ctx.fail(`Cannot add quantity ${command.quantity} of item ${command.productId}`);
    return;
  }
  ctx.emit(
    ItemAdded.create({
      item: {
        productId: command.productId,
        name: command.name,
        quantity: command.quantity,
      },
    }),
  );
  return {};
}

function removeItem(command, cart, ctx) {
  if (!cart.items.some((item) => item.productId === command.productId)) {
    ctx.fail(`Cannot remove item ${command.productId} because it is not in the cart`);
    return;
  }
  ctx.emit(ItemRemoved.create({ productId: command.productId }));
  return {};
}

function getCart(command, cart) {
  return cart;
}

function itemAdded(added, cart) {
  const existing = cart.items.find((item) => item.productId === added.item.productId);
  if (existing) {
    existing.quantity += added.item.quantity;
  } else {
    cart.items.push(added.item);
  }
  return cart;
}

function itemRemoved(removed, cart) {
  cart.items = cart.items.filter((item) => item.productId !== removed.productId);
  return cart;
}

new AkkaServerless().addComponent(entity).start();
