// Schema of the throwaway deployment the real-deployment suite runs against
// (CONVEX_TEST_URL + CONVEX_TEST_DEPLOY_KEY). Copy this folder's files into a fresh Convex
// project's convex/ folder (with ../../src/convex/powersync_checkpoints.ts) and
// `npx convex deploy`.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export default defineSchema({
  powersync_checkpoints: defineTable({
    last_updated: v.float64(),
  }),
  powersync_conformance: defineTable({
    id: v.int64(),
    v: v.optional(v.string()),
    extra: v.optional(v.string()),
  }).index("by_id", ["id"]),
});
