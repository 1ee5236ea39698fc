/*
 * The compatibility cart (AddItem, RemoveItem; see ../npm_cart) with a view of its
 * events, written with the published npm SDK @lightbend/akkaserverless-javascript-sdk
 * 0.32.0. The view's update handlers keep one row per cart: its total quantity and the
 * last product added. (The SDK 0.32.0 gives update handlers no entity id: its context
 * reads the metadata under a misspelt name, so the row cannot name its cart.)
 */

const { AkkaServerless, EventSourcedEntity, View } = require("@lightbend/akkaserverless-javascript-sdk");

const entity = new EventSourcedEntity(
  ["compatcart/cart_api.proto", "compatcart/cart_domain.proto"],
  "com.example.compat.cart.ShoppingCartService",
  "shopping-cart",
  { includeDirs: ["proto"] },
);

const domain = "com.example.compat.cart.domain.";
const ItemAdded = entity.lookupType(domain + "ItemAdded");
const ItemRemoved = entity.lookupType(domain + "ItemRemoved");
const Cart = entity.lookupType(domain + "Cart");

entity.setInitial(() => Cart.create({ items: [] }));

entity.setBehavior(() => ({
  commandHandlers: {
    AddItem: (command, cart, ctx) => {
      ctx.emit(ItemAdded.create({
        item: { productId: command.productId, name: command.name, quantity: command.quantity },
      }));
      return {};
    },
    RemoveItem: (command, cart, ctx) => {
      ctx.emit(ItemRemoved.create({ productId: command.productId }));
      return {};
    },
    GetCart: (command, cart) => cart,
  },
  eventHandlers: {
    ItemAdded: (added, cart) => {
      cart.items.push(added.item);
      return cart;
    },
    ItemRemoved: (removed, cart) => {
      cart.items = cart.items.filter((item) => item.productId !== removed.productId);
      return cart;
    },
  },
}));

const view = new View(
  ["compatview/cart_view.proto"],
  "com.example.compat.view.CartQuantities",
  { includeDirs: ["proto"], viewId: "cart-quantities" },
);

view.setUpdateHandlers({
  OnItemAdded: (added, row) => ({
    quantity: (row ? row.quantity : 0) + added.item.quantity,
    lastProductId: added.item.productId,
  }),
  // ItemRemoved carries no quantity: a removal empties the count. Without a row (the view
  // never saw the cart's items) the table is left as it is.
  OnItemRemoved: (removed, row) => (row ? { quantity: 0, lastProductId: row.lastProductId } : undefined),
});

new AkkaServerless().addComponent(entity).addComponent(view).start();
