import { Ajv, type Options } from 'ajv';
import type { FastifySchema, FastifySchemaCompiler } from 'fastify';

/**
 * Fastify's own options for Ajv (`@fastify/ajv-compiler`), but for `removeAdditional` (off: a property
 * a schema does not name is refused where it says so, never dropped in silence) and `coerceTypes`.
 */
const common: Options = {
  useDefaults: true,
  removeAdditional: false,
  addUsedSchema: false,
  allErrors: false,
};

/**
 * Bodies as sent: JSON has its own types, and Fastify's default (`coerceTypes: 'array'`, for every part
 * of a request) turned them into the schema's. Found by review: `{"instructions": null}` emptied an
 * agent's instructions, `{"maxTotalSteps": true}` capped a run at one step, `{"userId": 123}` added
 * member "123"; and `{"input": 12}` and `{"input": "12"}` counted as one request for an idempotency key.
 */
const bodies = new Ajv({ ...common, coerceTypes: false });

/** Path parameters, query strings and headers are text: read as the schema's numbers and arrays. */
const text = new Ajv({ ...common, coerceTypes: 'array' });

/** The API's validator compiler: {@link bodies} for bodies, {@link text} for the rest. */
export const validatorCompiler: FastifySchemaCompiler<FastifySchema> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? bodies : text).compile(schema as object);
