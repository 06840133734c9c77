-- Known answer: the yearly rate at which each category's list prices rise, from the price index by category
-- and month in ground_truth.json (its month-on-month growth, as a yearly rate).
--
-- Planting: a product's list price is revised now and then to its launch price x index(revision day) /
-- index(launch day), rounded to the centavo, and holds between revisions; the index compounds
-- inflation_per_year daily, and steps up by the sweetened-beverage excise on its date for the taxed
-- categories. So between two revisions of one product the price moves by the index's growth between their
-- days (up to a centavo).
--
-- Estimator: per category, over each product's consecutive price revisions (dim_products_history,
-- change_reason 'price_revision') that both fall within the period and do not straddle the excise date,
-- exp(sum of log price ratios / sum of days between them x 365.25) - 1.
--
-- Run it on a DuckDB warehouse with {ground_truth} replaced by the path of its ground_truth.json.
WITH truth AS (
    SELECT start_date::DATE AS first_day, end_date::DATE AS last_day,
           sweetened_beverage_excise."from"::DATE AS excise_day
    FROM read_json_auto('{ground_truth}')
),
revision AS (
    SELECT product_id, category_id, valid_from AS day, unit_price,
           lag(unit_price) OVER w AS price_before, lag(valid_from) OVER w AS day_before
    FROM dim_products_history
    WHERE change_reason = 'price_revision'
    WINDOW w AS (PARTITION BY product_id ORDER BY valid_from)
)
SELECT c.category_name AS category,
       exp(sum(ln(r.unit_price / r.price_before)) / sum(r.day - r.day_before) * 365.25) - 1 AS yearly_rate,
       count(*) AS revisions
FROM revision r
JOIN dim_categories c ON c.category_id = r.category_id, truth t
WHERE r.day_before >= t.first_day AND r.day <= t.last_day
  AND NOT (r.day_before < t.excise_day AND r.day >= t.excise_day)
GROUP BY c.category_name
ORDER BY c.category_name
