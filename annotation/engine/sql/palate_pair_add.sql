CREATE OR REPLACE FUNCTION public.palate_pair_add(p_sums jsonb, p_x double precision, p_y double precision)
 RETURNS jsonb
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    s float8[];
BEGIN
    -- quality.pair_add: running sums [n, Σx, Σy, Σx², Σy², Σxy].
    IF jsonb_typeof(p_sums) = 'array' AND jsonb_array_length(p_sums) = 6 THEN
        s := ARRAY[(p_sums ->> 0)::float8, (p_sums ->> 1)::float8, (p_sums ->> 2)::float8, (p_sums ->> 3)::float8, (p_sums ->> 4)::float8, (p_sums ->> 5)::float8];
    ELSE
        s := ARRAY[0, 0, 0, 0, 0, 0]::float8[];
    END IF;
    RETURN jsonb_build_array(s[1] + 1, s[2] + p_x, s[3] + p_y, s[4] + p_x * p_x,
                             s[5] + p_y * p_y, s[6] + p_x * p_y);
END
$function$

