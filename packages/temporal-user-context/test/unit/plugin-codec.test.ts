// The payload codec the plugin puts into the data converter: calls without a serialization context (a
// Nexus handler's input and result, an activity completed by task token) are bound to the namespace of
// the client or worker the plugin configured, not to the one it had when it was built.
import type { Payload, PayloadCodec } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import {
  ErrorCodes,
  KeyRing,
  UserContextPlugin,
  generateKeySet,
  memoryAuditSink,
} from 'temporal-user-context';

const payload: Payload = {
  metadata: { encoding: new TextEncoder().encode('json/plain') },
  data: new TextEncoder().encode('"secret"'),
};

/** The data of decoded payloads, as text. */
const text = (payloads: Payload[]) => payloads.map((p) => new TextDecoder().decode(p.data));

function registeredCodec(options: { namespace?: string }) {
  const plugin = new UserContextPlugin({
    keys: KeyRing.fromJSON(generateKeySet('plugin-codec').worker),
    audit: memoryAuditSink(),
    ...options,
  });
  const configured = plugin.configureWorker({ taskQueue: 'q', namespace: 'prod' });
  const codecs = (configured.dataConverter as { payloadCodecs?: PayloadCodec[] } | undefined)?.payloadCodecs;
  return { plugin, codec: codecs?.at(-1) };
}

describe("the plugin's codec in the data converter", () => {
  it("binds calls without a context to the worker's namespace, set after the plugin was built", async () => {
    const { plugin, codec } = registeredCodec({});
    const sealed = await codec!.encode([payload]);
    expect(text(await codec!.decode(sealed))).toEqual(['"secret"']);
    expect(text(await plugin.codec!.forNamespace('prod').decode(sealed))).toEqual(['"secret"']);
    await expect(plugin.codec!.forNamespace('default').decode(sealed)).rejects.toMatchObject({
      code: ErrorCodes.PAYLOAD_TAMPERED,
    });
  });

  it('keeps a namespace given as an option', async () => {
    const { plugin, codec } = registeredCodec({ namespace: 'billing' });
    const sealed = await codec!.encode([payload]);
    expect(text(await plugin.codec!.forNamespace('billing').decode(sealed))).toEqual(['"secret"']);
    await expect(plugin.codec!.forNamespace('prod').decode(sealed)).rejects.toMatchObject({
      code: ErrorCodes.PAYLOAD_TAMPERED,
    });
  });
});
