// The TCK model on the published npm SDK @lightbend/akkaserverless-javascript-sdk 0.32.0.
// Run by tests/integration/tck/test_javascript_frontend.py:
//   AKKASERVERLESS_SDK=<extracted package dir> TCK_DESCRIPTOR=<user-function.desc> node index.js
// The SDK reads the .proto files (protobufjs) and the compiled descriptor set (discovery).
const path = require('path');
const sdk = require(process.env.AKKASERVERLESS_SDK);

const protoDir = path.resolve(__dirname, '..', '..', 'proto');
const sdkProtoDir = path.join(process.env.AKKASERVERLESS_SDK, 'proto');
const includeDirs = [protoDir, sdkProtoDir];
const ES = 'larder.tck.model';
const VE = 'larder.tck.model.valueentity';
const ACT = 'larder.tck.model.action';

function eventSourced(name, entityType, options, handlers) {
  const entity = new sdk.EventSourcedEntity(
    'larder/tck/model/eventsourced.proto', `${ES}.${name}`, entityType,
    { includeDirs, ...options });
  const Persisted = entity.lookupType(`${ES}.Persisted`);
  entity.setInitial(() => Persisted.create({ value: '' }));
  entity.setBehavior(() => ({
    commandHandlers: handlers(Persisted),
    eventHandlers: {
      Persisted: (event, state) => Persisted.create({ value: state.value + event.value }),
    },
  }));
  return entity;
}

// Replies use the SDK's Reply API (replies.message / replies.forward + addEffect): a handler
// that returns a Reply gets exactly that Reply's side effects; effects registered through the
// deprecated ctx.effect are dropped when a Reply is returned (command-helper.js), so the two APIs
// must not be mixed.
function replyWithEffects(forward, message, effects) {
  const reply = forward ? sdk.replies.forward(forward.method, forward.message)
    : sdk.replies.message(message);
  for (const effect of effects) {
    reply.addEffect(effect.method, effect.message, effect.synchronous);
  }
  return reply;
}

const esCall = { path: `/${ES}.EventSourcedTwo/Call` };
const esModel = eventSourced('EventSourcedTckModel', 'event-sourced-tck-model',
  { snapshotEvery: 5 }, (Persisted) => ({
    Process: (request, state, ctx) => {
      let value = state.value;
      let forward = null;
      const effects = [];
      for (const action of request.actions) {
        if (action.emit) {
          ctx.emit(Persisted.create({ value: action.emit.value }));
          value += action.emit.value;
        } else if (action.effect) {
          effects.push({ method: esCall, message: { id: action.effect.id },
            synchronous: action.effect.synchronous });
        } else if (action.forward) {
          forward = { method: esCall, message: { id: action.forward.id } };
        } else if (action.fail) {
          ctx.fail(action.fail.message); // throws: the command's events and effects are dropped
        }
      }
      return replyWithEffects(forward, { message: value }, effects);
    },
  }));
const esTwo = eventSourced('EventSourcedTwo', 'event-sourced-tck-two', {},
  () => ({ Call: () => ({}) }));
// The SDK's entity option for Discovery's TimeoutPassivationStrategy (milliseconds).
const passivation100ms = { entityPassivationStrategy: { timeout: 100 } };
const esConfigured = eventSourced('EventSourcedConfigured', 'event-sourced-configured',
  passivation100ms, () => ({ Call: () => ({}) }));

function valueEntity(name, entityType, handlers, options = {}) {
  const entity = new sdk.ValueEntity(
    'larder/tck/model/valueentity.proto', `${VE}.${name}`, entityType,
    { includeDirs, ...options });
  const Persisted = entity.lookupType(`${VE}.Persisted`);
  entity.setInitial(() => Persisted.create({ value: '' }));
  entity.setCommandHandlers(handlers(Persisted));
  return entity;
}

const veCall = { path: `/${VE}.ValueEntityTwo/Call` };
const veModel = valueEntity('ValueEntityTckModel', 'value-entity-tck-model', (Persisted) => ({
  Process: (request, state, ctx) => {
    let value = state.value;
    let forward = null;
    const effects = [];
    for (const action of request.actions) {
      if (action.update) {
        ctx.updateState(Persisted.create({ value: action.update.value }));
        value = action.update.value;
      } else if (action.delete) {
        ctx.deleteState();
        value = '';
      } else if (action.effect) {
        effects.push({ method: veCall, message: { id: action.effect.id },
          synchronous: action.effect.synchronous });
      } else if (action.forward) {
        forward = { method: veCall, message: { id: action.forward.id } };
      } else if (action.fail) {
        ctx.fail(action.fail.message);
      }
    }
    return replyWithEffects(forward, { message: value }, effects);
  },
}));
const veTwo = valueEntity('ValueEntityTwo', 'value-entity-tck-two', () => ({ Call: () => ({}) }));
const veConfigured = valueEntity('ValueEntityConfigured', 'value-entity-configured',
  () => ({ Call: () => ({}) }), passivation100ms);

// One group of action steps -> one Reply (see action.proto). A Fail ends the group with a
// failure that carries no side effects; a group without reply, forward or failure is
// replies.noReply(), which the SDK sends as a response with side effects only.
const actCall = { path: `/${ACT}.ActionTwo/Call` };
function runGroup(steps) {
  let reply = null;
  const effects = [];
  for (const step of steps) {
    if (step.reply) {
      reply = sdk.replies.message({ message: step.reply.message });
    } else if (step.forward) {
      reply = sdk.replies.forward(actCall, { id: step.forward.id });
    } else if (step.effect) {
      effects.push(step.effect);
    } else if (step.fail) {
      return sdk.replies.failure(step.fail.message);
    }
  }
  reply = reply || sdk.replies.noReply();
  for (const effect of effects) {
    reply.addEffect(actCall, { id: effect.id }, effect.synchronous);
  }
  return reply;
}

const stepsOf = (request) => request.groups.flatMap((group) => group.steps);

// Streamed out (and the out side of streamed): one ctx.reply per group; a failure ends the stream.
function streamGroups(ctx, groups, end) {
  for (const group of groups) {
    const reply = runGroup(group.steps);
    ctx.reply(reply);
    if (reply.getFailure()) {
      end();
      return false;
    }
  }
  return true;
}

function endOnce(ctx) {
  let ended = false;
  const end = () => {
    if (!ended) {
      ended = true;
      ctx.end();
    }
  };
  end.done = () => ended;
  return end;
}

const action = new sdk.Action('larder/tck/model/action.proto', `${ACT}.ActionTckModel`,
  { includeDirs });
action.commandHandlers = {
  ProcessUnary: (request) => runGroup(stepsOf(request)),
  // Streamed in: the SDK delivers each request as a 'data' event; the Reply returned from the
  // 'end' callback is the call's single response.
  ProcessStreamedIn: (ctx) => {
    const steps = [];
    ctx.on('data', (request) => steps.push(...stepsOf(request)));
    ctx.on('end', () => runGroup(steps));
  },
  ProcessStreamedOut: (request, ctx) => {
    const end = endOnce(ctx);
    if (streamGroups(ctx, request.groups, end)) {
      end();
    }
  },
  ProcessStreamed: (ctx) => {
    const end = endOnce(ctx);
    ctx.on('data', (request) => {
      if (!end.done()) {
        streamGroups(ctx, request.groups, end);
      }
    });
    ctx.on('end', end);
  },
};
const actionTwo = new sdk.Action('larder/tck/model/action.proto', `${ACT}.ActionTwo`,
  { includeDirs });
actionTwo.commandHandlers = { Call: () => sdk.replies.message({}) };

// The view (view.proto): update handlers get (message, previous row or undefined, context)
// and return the row; returning undefined is the SDK's "ignore" (an Upsert without a row).
// A handler that throws is logged by the SDK, which then ends the call with status OK and no
// answer (view-support.js: "FIXME no failure reporting in protocol"), so the failure case
// fails on this SDK (expected_failures.json).
const VW = 'larder.tck.model.view';
const view = new sdk.View('larder/tck/model/view.proto', `${VW}.ViewTckModel`, { includeDirs });
function transform(value, previousRow, newValue) {
  if (value.startsWith('ignore:')) {
    return undefined;
  }
  if (value.startsWith('fail:')) {
    throw new Error(`the TCK asked this update to fail (${value})`);
  }
  const previous = previousRow ? previousRow.value : '';
  const updates = previousRow ? previousRow.updates : 0;
  return { value: newValue(previous), previous, updates: updates + 1 };
}
view.setUpdateHandlers({
  UpdateFromState: (state, previousRow) => transform(state.value, previousRow, () => state.value),
  UpdateFromEvent: (event, previousRow) =>
    transform(event.value, previousRow, (previous) => previous + event.value),
});

const server = new sdk.AkkaServerless({ descriptorSetPath: process.env.TCK_DESCRIPTOR });
for (const component of [esModel, esTwo, esConfigured, veModel, veTwo, veConfigured, action,
  actionTwo, view]) {
  server.addComponent(component);
}
server.start({ bindAddress: process.env.HOST || '127.0.0.1', bindPort: process.env.PORT });
