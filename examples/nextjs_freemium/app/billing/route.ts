import { customer } from "@/lib/skene";

// The 402's upgrade_url: to your Stripe Payment Link. client_reference_id tells
// `skene-pg listen --http` (Stripe's webhook) which customer paid.
export async function GET(request: Request) {
  const link = new URL(process.env.STRIPE_PAYMENT_LINK ?? "https://buy.stripe.com/test_example");
  link.searchParams.set("client_reference_id", customer(request) ?? "");
  return Response.redirect(link, 303);
}
