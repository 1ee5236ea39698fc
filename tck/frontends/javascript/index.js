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

const esModel = eventSourced('EventSourcedTckModel', 'event-sourced-tck-model',
  { snapshotEvery: 5 }, (Persisted) => ({
    Process: (request, state, ctx) => {
      let value = state.value;
      let forward = null;
      for (const action of request.actions) {
        if (action.emit) {
          ctx.emit(Persisted.create({ value: action.emit.value }));
          value += action.emit.value;
        } else if (action.effect) {
          ctx.effect({ path: `/${ES}.EventSourcedTwo/Call` }, { id: action.effect.id },
            action.effect.synchronous);
        } else if (action.forward) {
          forward = { id: action.forward.id };
        } else if (action.fail) {
          ctx.fail(action.fail.message);
        }
      }
      if (forward) {
        return sdk.replies.forward({ path: `/${ES}.EventSourcedTwo/Call` }, forward);
      }
      return { message: value };
    },
  }));
const esTwo = eventSourced('EventSourcedTwo', 'event-sourced-tck-two', {},
  () => ({ Call: () => ({}) }));
// 0.32.0 has no option for a passivation timeout: the configured entity cannot declare 100 ms.
const esConfigured = eventSourced('EventSourcedConfigured', 'event-sourced-configured', {},
  () => ({ Call: () => ({}) }));

function valueEntity(name, entityType, handlers) {
  const entity = new sdk.ValueEntity(
    'larder/tck/model/valueentity.proto', `${VE}.${name}`, entityType, { includeDirs });
  const Persisted = entity.lookupType(`${VE}.Persisted`);
  entity.setInitial(() => Persisted.create({ value: '' }));
  entity.setCommandHandlers(handlers(Persisted));
  return entity;
}

const veModel = valueEntity('ValueEntityTckModel', 'value-entity-tck-model', (Persisted) => ({
  Process: (request, state, ctx) => {
    let value = state.value;
    let forward = null;
    for (const action of request.actions) {
      if (action.update) {
        ctx.updateState(Persisted.create({ value: action.update.value }));
        value = action.update.value;
      } else if (action.delete) {
        ctx.deleteState();
        value = '';
      } else if (action.effect) {
        ctx.effect({ path: `/${VE}.ValueEntityTwo/Call` }, { id: action.effect.id },
          action.effect.synchronous);
      } else if (action.forward) {
        forward = { id: action.forward.id };
      } else if (action.fail) {
        ctx.fail(action.fail.message);
      }
    }
    if (forward) {
      return sdk.replies.forward({ path: `/${VE}.ValueEntityTwo/Call` }, forward);
    }
    return { message: value };
  },
}));
const veTwo = valueEntity('ValueEntityTwo', 'value-entity-tck-two', () => ({ Call: () => ({}) }));
const veConfigured = valueEntity('ValueEntityConfigured', 'value-entity-configured',
  () => ({ Call: () => ({}) }));

function runSteps(steps, ctx) {
  let result = undefined;
  for (const step of steps) {
    if (step.reply) {
      result = sdk.replies.message({ message: step.reply.message });
    } else if (step.forward) {
      result = sdk.replies.forward({ path: `/${ACT}.ActionTwo/Call` }, { id: step.forward.id });
    } else if (step.effect) {
      ctx.effect({ path: `/${ACT}.ActionTwo/Call` }, { id: step.effect.id },
        step.effect.synchronous);
    } else if (step.fail) {
      ctx.fail(step.fail.message);
    }
  }
  return result;
}

const action = new sdk.Action('larder/tck/model/action.proto', `${ACT}.ActionTckModel`,
  { includeDirs });
action.commandHandlers = {
  ProcessUnary: (request, ctx) => runSteps(request.groups.flatMap((g) => g.steps), ctx),
};
const actionTwo = new sdk.Action('larder/tck/model/action.proto', `${ACT}.ActionTwo`,
  { includeDirs });
actionTwo.commandHandlers = { Call: () => sdk.replies.message({}) };

const server = new sdk.AkkaServerless({ descriptorSetPath: process.env.TCK_DESCRIPTOR });
for (const component of [esModel, esTwo, esConfigured, veModel, veTwo, veConfigured, action,
  actionTwo]) {
  server.addComponent(component);
}
server.start({ bindAddress: process.env.HOST || '127.0.0.1', bindPort: process.env.PORT });
