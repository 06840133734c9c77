-- Known answer: each campaign's planted lift (campaign_lift[].lift in ground_truth.json).
--
-- Planting: while a campaign runs, its brand's products weigh `lift` times more in the product draw of the
-- order lines of accounts in its target channels (the account's retailer_type on the day). An order's later
-- lines leave out the products it already holds, so its first line (sale_id = order_id) is the plain draw.
--
-- Estimator: per campaign, the Mantel-Haenszel odds ratio over the campaign's days (one stratum a day) of
-- first lines of the campaign's brand against first lines of brands with no campaign running that day, in
-- target accounts against the other accounts. Within a day both groups draw from the same products, so the
-- odds ratio is the lift whatever the brands' appeal. Days on which another campaign of the same brand runs
-- are left out. A national campaign (no audience: every account) has no other accounts to compare with and
-- is not measured here. log_se is Woolf's standard error of the log odds ratio from the pooled cells
-- [brand in target, others in target, brand elsewhere, others elsewhere].
--
-- Run it on a DuckDB warehouse with {ground_truth} replaced by the path of its ground_truth.json
-- (python -m fmcg_beam.truth does that).
WITH campaign AS (
    SELECT c.campaign_id, c.brand_id, c.start_date::DATE AS start_date, c.end_date::DATE AS end_date,
           c.channels, c.national
    FROM (SELECT unnest(campaign_lift) AS c FROM read_json_auto('{ground_truth}'))
),
campaign_day AS (
    SELECT c.campaign_id, c.brand_id, c.channels, d.day::DATE AS day, c.national
    FROM campaign c, LATERAL (SELECT unnest(generate_series(c.start_date, c.end_date, INTERVAL 1 DAY)) AS day) d
),
promoted AS (  -- brands with a campaign running, by day
    SELECT DISTINCT brand_id, day FROM campaign_day
),
measured_day AS (  -- a targeted campaign's days without another campaign of its brand
    SELECT c.* FROM campaign_day c
    WHERE NOT c.national AND NOT EXISTS (
        SELECT 1 FROM campaign_day o WHERE o.brand_id = c.brand_id AND o.day = c.day AND o.campaign_id <> c.campaign_id)
),
first_line AS (
    SELECT s.date, p.brand_id, v.retailer_type AS channel
    FROM fact_sales s
    JOIN dim_products p ON p.product_id = s.product_id
    JOIN dim_retailers_history v ON v.retailer_id = s.retailer_id
        AND s.date BETWEEN v.valid_from AND coalesce(v.valid_to, DATE '9999-12-31')
    WHERE s.sale_id = s.order_id
),
cell AS (
    SELECT m.campaign_id, m.day,
        count(*) FILTER (WHERE f.brand_id = m.brand_id AND list_contains(m.channels, f.channel)) AS a,
        count(*) FILTER (WHERE f.brand_id <> m.brand_id AND list_contains(m.channels, f.channel)) AS b,
        count(*) FILTER (WHERE f.brand_id = m.brand_id AND NOT list_contains(m.channels, f.channel)) AS c,
        count(*) FILTER (WHERE f.brand_id <> m.brand_id AND NOT list_contains(m.channels, f.channel)) AS d
    FROM measured_day m
    JOIN first_line f ON f.date = m.day
    LEFT JOIN promoted p ON p.day = m.day AND p.brand_id = f.brand_id
    WHERE f.brand_id = m.brand_id OR p.brand_id IS NULL
    GROUP BY ALL
)
SELECT campaign_id,
    sum(a * d / (a + b + c + d)) / nullif(sum(b * c / (a + b + c + d)), 0) AS measured_lift,
    sqrt(1.0 / nullif(sum(a), 0) + 1.0 / nullif(sum(b), 0) + 1.0 / nullif(sum(c), 0) + 1.0 / nullif(sum(d), 0))
        AS log_se,
    [sum(a), sum(b), sum(c), sum(d)] AS cells
FROM cell
GROUP BY campaign_id
ORDER BY campaign_id
