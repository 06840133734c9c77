-- Known answer: a payday's order-line volume against other days, payday_boost in ground_truth.json.
--
-- Planting: a day's order lines are month_demand x weekday_demand, x payday_boost on paydays (the 15th and
-- the last day of each month, when wages are paid), times a constant, rounded.
--
-- Estimator: each payday's order lines over the mean of the other days of the same month and weekday (so
-- month and weekday cancel); the mean over paydays. Shock days are left out.
--
-- Run it on a DuckDB warehouse with {ground_truth} replaced by the path of its ground_truth.json.
WITH shock AS (
    SELECT s."from"::DATE AS first_day, s."to"::DATE AS last_day
    FROM (SELECT unnest(demand_shocks) AS s FROM read_json_auto('{ground_truth}'))
),
day_lines AS (
    SELECT date AS day, count(*) AS lines FROM fact_sales GROUP BY date
),
marked AS (
    SELECT day, year(day) AS y, month(day) AS m, isodow(day) AS wd, lines,
           dayofmonth(day) = 15 OR day = last_day(day) AS payday
    FROM day_lines
    WHERE NOT EXISTS (SELECT 1 FROM shock WHERE day BETWEEN first_day AND last_day)
),
other AS (
    SELECT y, m, wd, avg(lines) AS lines FROM marked WHERE NOT payday GROUP BY ALL
)
SELECT avg(p.lines / o.lines) AS ratio, count(*) AS paydays
FROM marked p JOIN other o USING (y, m, wd)
WHERE p.payday
